"""Does a better density of the inliers rank anomalies better?

Issue 21 asks the detector to rank outliers better than exact KDE (Scott's
bandwidth) on small real sets, and on anes96 and fair it does not
(``smoothing_by_size.md``, ``discrete_scoring.md``). This study asks why:
is the flow's density of the inliers worse there than KDE's, which more
capacity control would fix, or does a better density simply not rank those
anomalies better?

For each anomaly task and seed (``anomaly_detection``'s protocol: fit on
60% of the inliers), a further 20% of the fitting rows are held out; every
model is fitted on the rest and reports its mean log-likelihood on its
fitting rows and on the held-out inliers (nats; the detector's scores,
dequantized columns at their cells' centres), and its ROC-AUC on the test
rows. Models: the detector with its defaults, with a smaller network
(2 x 64), with more smoothing (``sigma=0.1``), and exact KDE.

Sets: ``anomaly_detection``'s statsmodels tasks, anes96 and fair (its
selection group, where the detector trails KDE) and modechoice and randhie
(its report group).

Run from the repository root on an idle machine (``bench`` extra):

    python -m benchmarks.studies.density_and_ranking --shard 0/2 &
    python -m benchmarks.studies.density_and_ranking --shard 1/2; wait
    python -m benchmarks.studies.density_and_ranking --write

Each shard (one torch thread) appends its runs to
``/tmp/density_and_ranking_runs.jsonl``; ``--write`` writes
``results/density_and_ranking.{json,md}`` (about 10 minutes in all).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks._common import (
    environment_line,
    sharded_study,
    timed,
)
from benchmarks.anomaly_detection import SEEDS, TASKS, protocol_splits
from benchmarks.density_peers import ScottKDE
from skflow import FlowMatchingOutlierDetector

RUNS = Path("/tmp/density_and_ranking_runs.jsonl")
# anomaly_detection's statsmodels sets (its selection and report groups).
STUDIED = [name for name, (group, _) in TASKS.items() if group != "tuned"]
MODELS = {
    "skflow (defaults)": lambda seed: FlowMatchingOutlierDetector(random_state=seed),
    "skflow, 2 x 64 network": lambda seed: FlowMatchingOutlierDetector(
        hidden_layer_sizes=(64, 64), random_state=seed
    ),
    "skflow, sigma=0.1": lambda seed: FlowMatchingOutlierDetector(
        sigma=0.1, random_state=seed
    ),
    "KDE (Scott, exact)": lambda seed: ScottKDE(),
}


def _jobs():
    for name in STUDIED:
        for seed in SEEDS:
            yield name, seed


def _run(name, seed):
    print((name, seed), flush=True)
    ((train, test, truth),) = [
        split[1:] for split in protocol_splits(*TASKS[name][1]()) if split[0] == seed
    ]
    order = np.random.RandomState(100 + seed).permutation(len(train))
    n_held_out = int(0.2 * len(train))
    held_out, fitting = train[order[:n_held_out]], train[order[n_held_out:]]
    runs = []
    for model_name, make in MODELS.items():
        model, seconds = timed(make(seed).fit, fitting)
        runs.append(
            {
                "set": name,
                "seed": seed,
                "model": model_name,
                "rows_fitted": len(fitting),
                "fit_seconds": seconds,
                "fitting_loglik": float(model.score_samples(fitting).mean()),
                "held_out_loglik": float(model.score_samples(held_out).mean()),
                "roc_auc": roc_auc_score(truth, -model.score_samples(test)),
            }
        )
    return runs


def report(results):
    runs = results["runs"]
    lines = [
        "# Density of the inliers against ranking of the anomalies",
        "",
        environment_line(results),
        "",
        "Each task: `anomaly_detection.md`'s protocol (fit on 60% of the "
        "inliers), with a further 20% of those rows held out. Mean "
        "log-likelihood (nats per row) on the fitting rows and the held-out "
        "inliers, and ROC-AUC on the test rows; mean over seeds 0, 1, 2 "
        "(the study's docstring).",
        "",
        "| set | rows fitted | model | fit (s) | fitting log-lik | held-out "
        "log-lik | ROC-AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["set"] for r in runs):
        for model in MODELS:
            chosen = [r for r in runs if r["set"] == name and r["model"] == model]
            if not chosen:
                continue

            def mean(key, chosen=chosen):
                return np.mean([r[key] for r in chosen])

            lines.append(
                f"| {name} | {chosen[0]['rows_fitted']:,} | {model} | "
                f"{mean('fit_seconds'):.0f} | {mean('fitting_loglik'):.2f} | "
                f"{mean('held_out_loglik'):.2f} | {mean('roc_auc'):.3f} |"
            )
    return lines


def main():
    sharded_study(
        __spec__.name,
        __doc__.splitlines()[0],
        "density_and_ranking",
        jobs=_jobs,
        run_one=_run,
        runs=RUNS,
        key=("set", "seed"),
        report=report,
    )


if __name__ == "__main__":
    main()
