"""Where to draw the line between a sane fit and one that diverged.

skflow refuses a fit (``FloatingPointError``, the previous model kept) when
its kept field does no better than the zero field, v = 0, on the
flow-matching loss, or when its held-out log-likelihood falls far below the
base density's. This study measures both quantities on fits that must pass:
Gaussian data (where a standardized Gaussian base density is close to the
truth, so no fit can beat it by much and small ones fall below it), short
and long fits of small test configurations, 1 to 20 features, 60 to 2,000
rows, two paths and two seeds; and on the fit that diverged silently in
skflow 0.3.2 (learning_rate=1e12 on data scaled by 1e6, in float64).

- loss ratio: the kept field's flow-matching loss over the zero field's
  (the mean squared target), on 2,048 fresh pairs;
- held-out gap: the best held-out score minus the base density's score of
  the same rows (nats per row, standardized units).

Run from the repository root (about 15 minutes on 2 cores):

    python -m benchmarks.studies.divergence_checks
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import torch

from benchmarks._common import environment, environment_line, write_results
from skflow import FlowMatchingDensity
from skflow._early_stopping import BASE_MARGIN, BASE_MARGIN_PER_FEATURE
from skflow._training import ZERO_FIELD_LOSS_RATIO

CONFIGURATIONS = {
    "16, 5 steps": {"hidden_layer_sizes": (16,), "max_iter": 5, "batch_size": 32},
    "16 x 16, 50 steps": {
        "hidden_layer_sizes": (16, 16),
        "max_iter": 50,
        "batch_size": 32,
    },
    "32 x 32, 300 steps": {"hidden_layer_sizes": (32, 32), "max_iter": 300},
    "3 x 64, 1000 steps": {"hidden_layer_sizes": (64, 64, 64), "max_iter": 1000},
}


class _Observed(FlowMatchingDensity):
    """Keeps its held-out score object, to read the base density's score."""

    def _held_out_score(self, *args):
        self.held_out_ = super()._held_out_score(*args)
        return self.held_out_


def _loss_ratio(est, X, seed):
    generator = torch.Generator().manual_seed(seed)
    z = torch.tensor((X - est.mean_) / est.scale_, dtype=torch.float32)
    n, d = z.shape
    x1 = z[torch.randint(0, n, (2048,), generator=generator)]
    x0 = torch.randn(2048, d, generator=generator)
    t = torch.rand(2048, 1, generator=generator) ** 0.5
    eps = torch.randn(2048, d, generator=generator)
    x_t, u_t = est.path_.interpolate(x0, x1, t, eps)
    with torch.no_grad():
        loss = (est.vector_field_(t, x_t) - u_t).square().mean()
    return float(loss / u_t.square().mean())


def sane_fits() -> list[dict]:
    runs = []
    grid = itertools.product(
        [1, 2, 5, 10, 20], [60, 300, 2000], CONFIGURATIONS, [0, 1], ["fm", "icfm"]
    )
    for d, n, name, seed, path in grid:
        rng = np.random.RandomState(seed)
        X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3
        est = _Observed(
            path=path,
            sigma=0.1 if path == "icfm" else 0.01,
            validation_fraction=0.2,
            random_state=seed,
            **CONFIGURATIONS[name],
        ).fit(X)
        base = est.held_out_.base_score()
        runs.append(
            {
                "n_features": d,
                "n_rows": n,
                "configuration": name,
                "seed": seed,
                "path": path,
                "held_out_gap": max(est.validation_scores_) - base,
                "loss_ratio": _loss_ratio(est, X, seed),
            }
        )
        print(runs[-1], flush=True)
    return runs


def markdown(results: dict) -> list[str]:
    runs = results["runs"]
    lines = [
        "# Divergence checks",
        "",
        environment_line(results),
        "",
        f"A fit is refused when its loss ratio exceeds {ZERO_FIELD_LOSS_RATIO} or "
        f"its held-out gap is below -({BASE_MARGIN} + {BASE_MARGIN_PER_FEATURE} d) "
        "nats. Sane fits (each row: the extremes over rows, seeds and paths):",
        "",
        "| features | configuration | lowest held-out gap | margin | "
        "loss ratio (min to max) |",
        "|---|---|---|---|---|",
    ]
    for d, name in itertools.product(
        sorted({r["n_features"] for r in runs}), CONFIGURATIONS
    ):
        group = [r for r in runs if r["n_features"] == d and r["configuration"] == name]
        ratios = [r["loss_ratio"] for r in group]
        lines.append(
            f"| {d} | {name} | {min(r['held_out_gap'] for r in group):.2f} | "
            f"-{BASE_MARGIN + BASE_MARGIN_PER_FEATURE * d:g} | "
            f"{min(ratios):.3f} to {max(ratios):.3f} |"
        )
    diverged = results["diverged"]
    lines += [
        "",
        f"Largest loss ratio of a sane fit: {max(r['loss_ratio'] for r in runs):.3f}; "
        f"lowest held-out gap per feature: "
        f"{min(r['held_out_gap'] / r['n_features'] for r in runs):.2f} nats.",
        "",
        "The fit that diverged silently in skflow 0.3.2 "
        "(`learning_rate=1e12, max_iter=200, dtype='float64'` on 500 rows of 2-D "
        f"Gaussian data scaled by 1e6): {diverged}",
    ]
    return lines


def diverged_fit() -> str:
    X = np.random.RandomState(0).normal(size=(500, 2)) * 1e6
    est = FlowMatchingDensity(
        learning_rate=1e12, max_iter=200, dtype="float64", random_state=0
    )
    try:
        est.fit(X)
    except FloatingPointError as error:
        return f"refused: {str(error).split(', so no model')[0]}."
    return "NOT refused."


def main():
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    results = {**environment(__spec__.name), "diverged": diverged_fit()}
    results["runs"] = sane_fits()
    write_results("divergence_checks", results, markdown(results))


if __name__ == "__main__":
    main()
