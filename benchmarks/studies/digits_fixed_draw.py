"""Why skflow overfits digits' fixed dequantization draw (issue 21).

``density_quality.md``: fitted like its peers on one noise draw X + U and
scored on X_test + U_test, skflow is about 10 nats per image behind
zuko's NSF on digits, while with fresh noise at every step
(``dequantize=True``) the two are level. The suspect: on a fixed finite
sample, flow matching regresses the field of the empirical distribution,
which carries every point onto a training image; with ``sigma=0.01`` its
end points are nearly those images, so a flexible field learns a density
of spikes, and early stopping on held-out rows only halts the descent.
A larger ``sigma`` blurs each end point, as fresh noise does.

A diagnosis, not a choice of default: the fixed-draw fit of
``density_quality.py`` (its split and draw, its metric), with ``sigma`` at
0.05, at ``sigma="auto"``'s value for those rows, at 0.3 and at 1.0, seeds
0-2; the default's (0.01) and the NSF's runs are read from
``results/density_quality.json``. digits is a selection set, so nothing
here may set a default.

Run from the repository root (about 10 min on two cores):

    python -m benchmarks.studies.digits_fixed_draw --shard 0/2 &
    python -m benchmarks.studies.digits_fixed_draw --shard 1/2; wait
    python -m benchmarks.studies.digits_fixed_draw --write
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from benchmarks import density_quality
from benchmarks._common import RESULTS, environment_line, sharded_study, timed
from skflow import FlowMatchingDensity
from skflow._recipe import Recipe

RUNS = Path("/tmp/digits_fixed_draw_runs.jsonl")
SEEDS = (0, 1, 2)
SIGMAS = (0.05, "auto", 0.3, 1.0)


def fixed_draw(seed):
    """``density_quality.real_data_run``'s split and noise draw of digits."""
    split = train_test_split(load_digits().data, test_size=0.2, random_state=seed)
    rng = np.random.default_rng(seed)
    return [part + rng.uniform(size=part.shape) for part in split]


def _jobs():
    # The default once more on seed 0: its fitting rows' score, and a check
    # that it reproduces density_quality's run.
    return [("0.01", SEEDS[0])] + [
        (str(sigma), seed) for sigma in SIGMAS for seed in SEEDS
    ]


def _run(sigma, seed):
    train, test = fixed_draw(seed)
    value = sigma if sigma == "auto" else float(sigma)
    model = FlowMatchingDensity(sigma=value, random_state=seed)
    _, seconds = timed(model.fit, train)
    return {
        "sigma": sigma,
        "seed": seed,
        "sigma_value": model.sigma_,
        "log_likelihood": float(np.mean(model.score_samples(test))),
        "train_log_likelihood": float(np.mean(model.score_samples(train[:500]))),
        "n_iter": model.n_iter_,
        "fit_seconds": seconds,
    }


def report(results):
    before = json.loads((RESULTS / "density_quality.json").read_text())["runs"]
    digits = {
        (r["model"], r["seed"]): r["metric"]
        for r in before
        if r["dataset"] == density_quality.DIGITS
    }
    runs = results["runs"]
    columns = {
        "0.01 (default)": [digits[density_quality.FIXED_DRAW, s] for s in SEEDS],
        **{
            f"{sigma}": [
                next(
                    r["log_likelihood"]
                    for r in runs
                    if (r["sigma"], r["seed"]) == (str(sigma), s)
                )
                for s in SEEDS
            ]
            for sigma in SIGMAS
        },
        "NSF": [digits[density_quality.NSF, s] for s in SEEDS],
        "skflow, fresh noise (dequantize=True)": [
            digits[density_quality.SKFLOW, s] for s in SEEDS
        ],
    }
    auto = [r["sigma_value"] for r in runs if r["sigma"] == "auto"]
    lines = [
        "# Why skflow overfits digits' fixed dequantization draw (issue 21)",
        "",
        environment_line(results),
        "",
        "Test log-likelihood (nats per image, higher is better) of "
        "`FlowMatchingDensity(sigma=...)` fitted on `density_quality.py`'s "
        "fixed noise draw of digits and scored on its test draw, per seed "
        f"{list(SEEDS)} and their mean; the default's, the NSF's and skflow's "
        'with fresh noise are `density_quality.json`\'s runs. `sigma="auto"` '
        f"was {np.mean(auto):.3f} (standardized units). The suspect and the "
        "setup are in the study's docstring.",
        "",
        "| sigma | " + " | ".join(f"seed {s}" for s in SEEDS) + " | mean |",
        "|---|" + "---|" * (len(SEEDS) + 1),
    ]
    for name, values in columns.items():
        cells = " | ".join(f"{v:.2f}" for v in values)
        lines.append(f"| {name} | {cells} | {np.mean(values):.2f} |")
    train = {
        r["sigma"]: r["train_log_likelihood"] for r in runs if r["seed"] == SEEDS[0]
    }
    again = next(r for r in runs if r["sigma"] == "0.01")["log_likelihood"]
    lines += [
        "",
        f"The default re-fitted on seed {SEEDS[0]}: {again:.4f} (the "
        f"benchmark's run: {digits[density_quality.FIXED_DRAW, SEEDS[0]]:.4f}). "
        "Seed 0's mean log-likelihood of 500 of its fitting images: "
        + ", ".join(f"sigma {k}: {v:.2f}" for k, v in train.items())
        + ". Steps taken (early stopping), mean over seeds: "
        + ", ".join(
            f"sigma {sigma}: "
            f"{np.mean([r['n_iter'] for r in runs if r['sigma'] == str(sigma)]):,.0f}"
            for sigma in SIGMAS
        )
        + f" (the budget: {Recipe().max_iter(len(fixed_draw(0)[0])):,}).",
        "",
        "Reading: up to 0.3, the larger sigma, the higher the test score, "
        "on every seed, while seed 0's fitting images' score moves less and "
        "not one way: the gap to the NSF is overfitting of the fixed points, "
        "which blurring the path's end points reduces, as the docstring "
        "suspects. At 1.0 the blur swamps the images (the fitting images "
        "fall as far as the test ones). The gap does not close at any sigma "
        'tried, and `sigma="auto"` costs breast_cancer several nats '
        "(`smoothing_by_size.md`), so no default changes here.",
    ]
    return lines


def main():
    sharded_study(
        __spec__.name,
        __doc__.splitlines()[0],
        "digits_fixed_draw",
        jobs=_jobs,
        run_one=_run,
        runs=RUNS,
        key=("sigma", "seed"),
        report=report,
    )


if __name__ == "__main__":
    main()
