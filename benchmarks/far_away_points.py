"""Scoring points far from the data with the default estimator.

Fits ``FlowMatchingDensity()`` (defaults) on two moons and on a 10-D
Gaussian with random covariance, then scores 100 held-out rows together with
rows 10^k standard deviations out (k = 1, 3, 6, 10, 30; 8 random directions
each). Reports, per distance: the far rows' log densities, the wall time
and field evaluations of the call against scoring the normal rows alone,
the largest change of a normal row's score, and any warning.

Run from the repository root: ``python -m benchmarks.far_away_points``.
Writes ``results/far_away_points.{json,md}``.
"""

import dataclasses
import warnings

import numpy as np
from sklearn.datasets import make_moons

import skflow
from benchmarks._common import environment, environment_line, timed, write_results
from skflow import FlowMatchingDensity

DISTANCES = [1e1, 1e3, 1e6, 1e10, 1e30]


def _datasets():
    moons, _ = make_moons(n_samples=2100, noise=0.05, random_state=0)
    rng = np.random.RandomState(0)
    a = rng.normal(size=(10, 10))
    gaussian = rng.multivariate_normal(
        np.zeros(10), a @ a.T / 10 + 0.1 * np.eye(10), 2100
    )
    return {"moons (2-D)": moons, "gaussian (10-D)": gaussian}


def _timed_scores(est, X):
    with warnings.catch_warnings(record=True) as caught, skflow.solver_stats() as stats:
        warnings.simplefilter("always")
        scores, elapsed = timed(est.score_samples, X)
    return scores, elapsed, dataclasses.asdict(stats), [str(w.message) for w in caught]


def run() -> list[dict]:
    rows = []
    for name, X in _datasets().items():
        train, normal = X[:2000], X[2000:]
        est = FlowMatchingDensity(random_state=0).fit(train)
        base, base_time, base_stats, _ = _timed_scores(est, normal)
        directions = np.random.RandomState(1).normal(size=(8, X.shape[1]))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        for distance in DISTANCES:
            far = train.mean(0) + distance * train.std(0) * directions
            scores, elapsed, stats, caught = _timed_scores(
                est, np.vstack([normal, far])
            )
            rows.append(
                {
                    "data": name,
                    "distance_in_std": distance,
                    "far_log_density_max": float(scores[len(normal) :].max()),
                    "far_log_density_min": float(scores[len(normal) :].min()),
                    "all_finite": bool(np.all(np.isfinite(scores))),
                    "normal_rows_max_change": float(
                        np.abs(scores[: len(normal)] - base).max()
                    ),
                    "normal_min_log_density": float(base.min()),
                    "seconds": elapsed,
                    "seconds_normal_rows_alone": base_time,
                    "evaluations": stats["n_evaluations"],
                    "evaluations_normal_rows_alone": base_stats["n_evaluations"],
                    "warnings": caught,
                }
            )
            print(rows[-1], flush=True)
    return rows


def markdown(results):
    rows = results["rows"]
    lines = [
        "# Far-away points (default estimator)",
        "",
        environment_line(results),
        "",
        "100 held-out rows scored together with 8 rows at each distance.",
        "",
        "| data | distance (std) | far log density (max / min) | finite | "
        "largest change of a normal row | time (alone) | field evaluations "
        "(alone) | warnings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['distance_in_std']:.0e} | "
            f"{r['far_log_density_max']:.3g} / {r['far_log_density_min']:.3g} | "
            f"{r['all_finite']} | {r['normal_rows_max_change']:.1e} | "
            f"{r['seconds']:.2f} s ({r['seconds_normal_rows_alone']:.2f} s) | "
            f"{r['evaluations']} ({r['evaluations_normal_rows_alone']}) | "
            f"{len(r['warnings'])} |"
        )
    warned = sorted({w for r in rows for w in r["warnings"]})
    if warned:
        lines += ["", "Warnings seen:", ""] + [f"- {w}" for w in warned]
    return lines


def main():
    results = {**environment(__spec__.name), "rows": run()}
    write_results("far_away_points", results, markdown(results))


if __name__ == "__main__":
    main()
