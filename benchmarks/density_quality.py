"""Density quality of FlowMatchingDensity() with defaults against its peers.

Known densities (``known_densities.py``): each model is fitted on 10,000
points and scored on 5,000 fresh ones; the metric is the test
KL(p || q) = mean(log p - log q), in nats (lower is better, 0 is perfect).
Real data bundled with scikit-learn, split 80/20: the metric is the mean
test log-likelihood in the data's units (higher is better).

- digits (8 x 8 images, integer pixel values 0-16) are dequantized: every
  model is fitted on X + U and scored on X_test + U_test (U uniform on
  [0, 1), drawn once per seed), which estimates a lower bound on the log
  probability of the discrete images. skflow (defaults) fits the integer
  images with its own dequantization instead (``dequantize=True``, the
  default), and is also run on the peers' fixed draw.
- breast_cancer (30 continuous features).

Peers (``density_peers.py``): KDE with a cross-validated bandwidth scored
exactly, a GaussianMixture chosen by BIC, and zuko's NSF trained by maximum
likelihood for as long as skflow's fit took on the same data.

Run from the repository root on an idle machine (needs the ``bench`` and
``plot`` extras); writes ``results/density_quality.{json,md,png}``:

    python -m benchmarks.density_quality

``--digits-seeds 0 1 2 3 4 5`` runs only skflow and the NSF on digits, for
those seeds, and writes ``results/density_quality_digits_seeds.{json,md}``.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

import skflow
from benchmarks._common import (
    RESULTS,
    environment,
    environment_line,
    timed,
    write_results,
)
from benchmarks.density_peers import BICGaussianMixture, CrossValidatedKDE, TimedNSF
from benchmarks.known_densities import KNOWN_DENSITIES

SEEDS = (0, 1)
N_TRAIN, N_TEST = 10_000, 5_000
SKFLOW = "skflow (defaults)"
FIXED_DRAW = "skflow (defaults, on the peers' fixed draw)"
NSF = "NSF (zuko, same time)"
DIGITS = "digits (dequantized)"


def evaluate(models, data, metric):
    """Fit and score each model; ``models`` maps names to factories.

    ``data(name)`` gives the model's (X_train, X_test). A factory gets the
    fit time of skflow, which is fitted first (the NSF's wall-time budget).
    """
    rows, fitted, skflow_seconds = [], {}, None
    for name, factory in models.items():
        fitted[name] = model = factory(skflow_seconds)
        X_train, X_test = data(name)
        _, fit_seconds = timed(model.fit, X_train)
        if name == SKFLOW:
            skflow_seconds = fit_seconds
        log_q, score_seconds = timed(model.score_samples, X_test)
        rows.append(
            {
                "model": name,
                "metric": float(metric(log_q)),
                "fit_seconds": fit_seconds,
                "score_seconds": score_seconds,
            }
        )
        print(f"  {name}: {rows[-1]['metric']:.4f} ({fit_seconds:.1f} s)", flush=True)
    return rows, fitted


def peers(seed):
    return {
        SKFLOW: lambda _: skflow.FlowMatchingDensity(random_state=seed),
        "KDE (CV bandwidth, exact)": lambda _: CrossValidatedKDE(seed),
        "GMM (BIC)": lambda _: BICGaussianMixture(seed),
        NSF: lambda seconds: TimedNSF(seconds, seed),
    }


PLOT_GRID = np.linspace(-4, 4, 120)


def known_density_runs(plots):
    """KL runs; ``plots[set][model]`` gets seed 0's densities on a grid."""
    runs = []
    xx, yy = np.meshgrid(PLOT_GRID, PLOT_GRID)
    grid = np.column_stack([xx.ravel(), yy.ravel()])
    for name, density in KNOWN_DENSITIES.items():
        for seed in SEEDS:
            print(f"{name}, seed {seed}", flush=True)
            split = density.sample(N_TRAIN, seed), density.sample(N_TEST, 1000 + seed)
            log_p = density.log_prob(split[1])
            rows, fitted = evaluate(
                peers(seed),
                lambda _, split=split: split,
                lambda log_q, log_p=log_p: np.mean(log_p - log_q),
            )
            runs += [{"dataset": name, "seed": seed, "kind": "kl", **r} for r in rows]
            if seed == 0 and density.n_features == 2:
                plots[name] = {"truth": density.log_prob(grid)}
                for model_name, model in fitted.items():
                    plots[name][model_name] = model.score_samples(grid)
    return runs


def real_data_runs(seeds=SEEDS, only=None):
    """Log-likelihood runs; ``only`` = (set names, model names) to run."""
    runs = []
    sets = (
        (DIGITS, load_digits().data, True),
        ("breast_cancer", load_breast_cancer().data, False),
    )
    for name, X, discrete in sets:
        if only and name not in only[0]:
            continue
        for seed in seeds:
            print(f"{name}, seed {seed}", flush=True)
            split = train_test_split(X, test_size=0.2, random_state=seed)
            models = peers(seed)
            if only:
                models = {m: f for m, f in models.items() if m in only[1]}
            data = {model: split for model in models}
            if discrete:
                rng = np.random.default_rng(seed)
                noisy = [part + rng.uniform(size=part.shape) for part in split]
                # skflow dequantizes the integers itself (fresh noise at
                # every step, its own draw to score); the peers cannot, and
                # get one fixed draw. skflow on that fixed draw too, for
                # the like-for-like comparison.
                data = {model: noisy for model in models}
                data[SKFLOW] = split
                if not only or FIXED_DRAW in only[1]:
                    models[FIXED_DRAW] = lambda _, seed=seed: (
                        skflow.FlowMatchingDensity(random_state=seed)
                    )
                    data[FIXED_DRAW] = noisy
            rows, _ = evaluate(models, data.__getitem__, np.mean)
            tags = {"dataset": name, "seed": seed, "kind": "loglik"}
            runs += [{**tags, **r} for r in rows]
    return runs


def density_plots(plots, path):
    """Density of each 2-D set (seed 0): the truth beside every model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(next(iter(plots.values())))
    figure, axes = plt.subplots(
        len(plots), len(names), figsize=(2.6 * len(names), 2.6 * len(plots))
    )
    extent = (PLOT_GRID[0], PLOT_GRID[-1]) * 2
    shape = (len(PLOT_GRID), len(PLOT_GRID))
    for row, (set_name, densities) in enumerate(plots.items()):
        for col, name in enumerate(names):
            ax = axes[row, col]
            image = np.exp(densities[name]).reshape(shape)
            ax.imshow(image, origin="lower", extent=extent, cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name.replace(" (", "\n("), fontsize=9)
            if col == 0:
                ax.set_ylabel(set_name)
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def summarize(runs):
    table = {}
    for r in runs:
        cell = table.setdefault(r["dataset"], {}).setdefault(r["model"], [])
        cell.append(r)
    return {
        dataset: {
            model: {
                "metric": float(np.mean([r["metric"] for r in cell])),
                "standard_error": float(
                    np.std([r["metric"] for r in cell]) / np.sqrt(len(cell))
                ),
                "fit_seconds": float(np.mean([r["fit_seconds"] for r in cell])),
                "score_seconds": float(np.mean([r["score_seconds"] for r in cell])),
            }
            for model, cell in models.items()
        }
        for dataset, models in table.items()
    }


def markdown(results):
    lines = [
        "# Density quality",
        "",
        f"{environment_line(results)} Mean over seeds {list(SEEDS)}, "
        "± std / sqrt(number of seeds).",
        "",
    ]
    for kind, title, better in (
        ("kl", "Test KL(p || q) in nats on known densities", "lower"),
        ("loglik", "Test log-likelihood on real data", "higher"),
    ):
        lines += [f"## {title} ({better} is better)", ""]
        lines += [
            "| data | model | metric | fit (s) | score (s) |",
            "|---|---|---|---|---|",
        ]
        for dataset, models in results["summary"].items():
            if results["kinds"][dataset] != kind:
                continue
            ranked = sorted(
                models.items(),
                key=lambda item: item[1]["metric"] * (1 if better == "lower" else -1),
            )
            for model, cell in ranked:
                lines.append(
                    f"| {dataset} | {model} | {cell['metric']:.3f} ± "
                    f"{cell['standard_error']:.3f} | {cell['fit_seconds']:.1f} | "
                    f"{cell['score_seconds']:.1f} |"
                )
        lines.append("")
    lines += [
        "skflow and the NSF on digits on more seeds (`--digits-seeds`): "
        "`density_quality_digits_seeds.md`.",
        "",
        "![densities](density_quality.png)",
    ]
    return lines


def digits_seeds(seeds):
    """skflow against the NSF on digits for more seeds: is the gap real?"""
    runs = real_data_runs(seeds, only=({DIGITS}, {SKFLOW, NSF}))
    by_model = {
        model: np.array([r["metric"] for r in runs if r["model"] == model])
        for model in (SKFLOW, NSF)
    }
    difference = by_model[SKFLOW] - by_model[NSF]
    results = {**environment(__spec__.name), "runs": runs}
    results["command"] += f" --digits-seeds {' '.join(map(str, seeds))}"
    lines = [
        "# Digits: skflow against the NSF on more seeds",
        "",
        f"{environment_line(results)} Test log-likelihood in nats (higher "
        "is better), setup as in `density_quality.md` (the NSF trains for "
        "as long as skflow's fit on the same seed took).",
        "",
        "| seed | skflow (defaults) | NSF (zuko, same time) | difference |",
        "|---|---|---|---|",
        *(
            f"| {seed} | {a:.2f} | {b:.2f} | {a - b:+.2f} |"
            for seed, a, b in zip(seeds, by_model[SKFLOW], by_model[NSF], strict=True)
        ),
        f"| mean ± s.e. | {by_model[SKFLOW].mean():.2f} | "
        f"{by_model[NSF].mean():.2f} | {difference.mean():+.2f} ± "
        f"{difference.std(ddof=1) / np.sqrt(len(seeds)):.2f} |",
    ]
    write_results("density_quality_digits_seeds", results, lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--digits-seeds",
        type=int,
        nargs="*",
        help="only skflow and the NSF on digits, for these seeds",
    )
    args = parser.parse_args()
    if args.digits_seeds:
        digits_seeds(args.digits_seeds)
        return
    plots = {}
    runs = known_density_runs(plots) + real_data_runs()
    results = {
        **environment(__spec__.name),
        "kinds": {r["dataset"]: r["kind"] for r in runs},
        "summary": summarize(runs),
        "runs": runs,
    }
    write_results("density_quality", results, markdown(results))
    density_plots(plots, RESULTS / "density_quality.png")


if __name__ == "__main__":
    main()
