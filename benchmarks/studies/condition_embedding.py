"""How the conditional field should see x: a study on sets kept for choosing (issue 22).

``ConditionalFlowMatchingDensity`` feeds the core network an embedding of the
standardized x, an MLP whose widths are ``Recipe.condition_layer_sizes``.
Variants, each with the estimator's defaults otherwise:

- ``(128, 64)``: an MLP with one hidden layer (the first default);
- ``()``: no embedding, the standardized x itself;
- ``(256, 128)``: a wider one;
- ``(128, 128, 64)``: a deeper one (the default since this study).

The sets are used for this choice only; ``benchmarks/conditional_density.py``
reports on others. Each draws 4,000 fitting and 2,000 test rows per seed:

- ``ring``: x ~ U(-1, 1)^2; y = (1 + x1 / 2)(cos phi, sin phi) + (0.05 +
  0.1 |x2|) eps, phi ~ U(0, 2 pi): a ring whose radius and width follow x;
- ``two-branch 2-D``: x ~ U(-1, 1)^3; y = +-(x1 + x2 x3, x2 - x1 x3) + 0.1
  eps with equal odds: two modes that cross where the mean is 0;
- ``skewed``: x ~ U(-2, 2); y = x + exp(0.6 x eps) - 1: skewed to the right
  for x > 0, to the left for x < 0.

Metric: mean test log p(y | x) (nats per row, higher is better), mean over
three seeds. Run from the repository root; writes
``results/condition_embedding.{md,json}``:

    python -m benchmarks.studies.condition_embedding
"""

from __future__ import annotations

import dataclasses

import numpy as np

from benchmarks._common import environment, environment_line, write_results
from skflow import ConditionalFlowMatchingDensity
from skflow._recipe import Recipe

SEEDS = (0, 1, 2)
N_FIT, N_TEST = 4_000, 2_000
VARIANTS = [(128, 64), (), (256, 128), (128, 128, 64)]


def ring(n, rng):
    X = rng.uniform(-1, 1, (n, 2))
    phi = rng.uniform(0, 2 * np.pi, n)
    radius = 1 + X[:, 0] / 2
    width = 0.05 + 0.1 * np.abs(X[:, 1])
    circle = np.column_stack([np.cos(phi), np.sin(phi)])
    return X, radius[:, None] * circle + width[:, None] * rng.normal(size=(n, 2))


def two_branch(n, rng):
    X = rng.uniform(-1, 1, (n, 3))
    x1, x2, x3 = X.T
    mean = np.column_stack([x1 + x2 * x3, x2 - x1 * x3])
    sign = rng.choice([-1.0, 1.0], (n, 1))
    return X, sign * mean + 0.1 * rng.normal(size=(n, 2))


def skewed(n, rng):
    x = rng.uniform(-2, 2, n)
    return x[:, None], x + np.exp(0.6 * x * rng.normal(size=n)) - 1


SETS = {"ring": ring, "two-branch 2-D": two_branch, "skewed": skewed}


def estimator(widths, seed):
    class Variant(ConditionalFlowMatchingDensity):
        _recipe = dataclasses.replace(Recipe(), condition_layer_sizes=widths)

    return Variant(random_state=seed)


def main():
    runs = []
    for name, draw in SETS.items():
        for seed in SEEDS:
            X, y = draw(N_FIT, np.random.default_rng(seed))
            X_test, y_test = draw(N_TEST, np.random.default_rng(1000 + seed))
            for widths in VARIANTS:
                est = estimator(widths, seed).fit(X, y)
                loglik = est.score(X_test, y_test)
                runs.append(
                    {
                        "set": name,
                        "seed": seed,
                        "widths": list(widths),
                        "loglik": loglik,
                        "n_iter": est.n_iter_,
                    }
                )
                print(f"{name} {seed} {widths}: {loglik:.4f}", flush=True)
    report(runs)


def report(runs: list[dict]) -> None:
    """Write ``results/condition_embedding.{md,json}`` from the runs."""
    results = {**environment(__name__), "runs": runs}
    lines = [
        "# How the conditional field should see x (issue 22)",
        "",
        environment_line(results),
        "",
        "Mean test log p(y | x) (nats per row, higher is better) over seeds "
        f"{list(SEEDS)}, {N_FIT:,} fitting and {N_TEST:,} test rows; "
        "`ConditionalFlowMatchingDensity()` defaults but for the embedding's "
        "widths (`()`: x itself). In brackets: the mean difference from "
        "(128, 64), and on how many seeds it is positive.",
        "",
        "| set | " + " | ".join(str(tuple(w)) for w in VARIANTS) + " |",
        "|---|" + "---|" * len(VARIANTS),
    ]
    for name in SETS:
        of_set = [r for r in runs if r["set"] == name]
        by_variant = {
            tuple(w): np.array([r["loglik"] for r in of_set if r["widths"] == list(w)])
            for w in VARIANTS
        }
        default = by_variant[VARIANTS[0]]
        cells = []
        for widths in VARIANTS:
            scores = by_variant[widths]
            if widths == VARIANTS[0]:
                cells.append(f"{scores.mean():.3f}")
            else:
                gain = scores - default
                cells.append(
                    f"{scores.mean():.3f} ({gain.mean():+.3f}, "
                    f"{int((gain > 0).sum())}/{len(gain)})"
                )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    write_results("condition_embedding", results, lines)


if __name__ == "__main__":
    main()
