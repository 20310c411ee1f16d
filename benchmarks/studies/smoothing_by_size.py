"""sigma="auto": a smoothing that follows the data's size (issue 21).

With a fixed sigma (0.01, standardized units) the model overfits a few
hundred rows: cross-validated KDE beats it on two spirals at 200 and 1,000
rows. Flow matching's empirical optimum is a Gaussian KDE of bandwidth
sigma (Kunkel & Trabs 2025), so sigma is the lever, and the best one falls
as rows come in. This study chooses the rule on one group of sets and
reports it on another:

- ``selection``: two spirals, checkerboard, the 10-D mixture (the density
  benchmark's known sets) at 200, 1,000 and 5,000 rows, over a grid of
  fixed sigmas. The rule
  ``1.3 * n^-(1 / (d + 4) + 0.3)`` was fitted by eye to the best sigma of
  each set and size.
- ``report`` (never used to choose): eight Gaussians and two thin rings at
  200 and 1,000 rows, the 10-D mixture and two spirals at 10,000 rows (does
  the rule cost anything where the fixed default was tuned?), and real
  sets: statsmodels' ``engel`` (188 x 2 to fit), scikit-learn's
  ``breast_cancer`` (455 x 30) and ``digits`` (1,437 x 64); the detector
  on two statsmodels survey sets no benchmark here had used (anes96, fair)
  and on ``anomaly_detection``'s digits task.

Known sets: test KL (nats, lower is better) on 5,000 fresh rows; real sets:
mean test log-likelihood (higher is better) of an 80/20 split. Peers: KDE
with a cross-validated bandwidth (exact) and a BIC Gaussian mixture.

Run from the repository root on an idle machine (``bench`` extra):

    python -m benchmarks.studies.smoothing_by_size --part selection
    python -m benchmarks.studies.smoothing_by_size --part report
    python -m benchmarks.studies.smoothing_by_size --part anomaly --sets \
        "anes96, vote 1 as anomalies" "fair, any affair as anomalies" \
        "digits, class 0 as anomalies"
    python -m benchmarks.studies.smoothing_by_size --write

Each part appends its runs to ``/tmp/smoothing_by_size_runs.jsonl`` (about
an hour in all; ``--sets`` runs only the named sets or tasks); ``--write``
writes ``results/smoothing_by_size.{json,md}`` from them. Without
``--sets``, ``--part anomaly`` also runs ``anomaly_detection``'s other
tasks, which the committed results leave out for time.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from benchmarks._common import environment, environment_line, timed, write_results
from benchmarks.anomaly_detection import TASKS, protocol_splits
from benchmarks.anomaly_detection import splits as benchmark_splits
from benchmarks.density_peers import BICGaussianMixture, CrossValidatedKDE, ScottKDE
from benchmarks.known_densities import KNOWN_DENSITIES, two_rings
from skflow import FlowMatchingDensity, FlowMatchingOutlierDetector

RUNS = Path("/tmp/smoothing_by_size_runs.jsonl")
N_TEST = 5000
_SMALL = {
    200: ((0, 1), (0.01, 0.05, 0.1, 0.2, 0.4)),
    1000: ((0, 1), (0.01, 0.02, 0.03, 0.05, 0.1)),
}
# set: {rows: (seeds, sigmas)}
SELECTION = {
    "two spirals": {**_SMALL, 5000: ((0,), (0.01, 0.02, 0.05))},
    "checkerboard": {**_SMALL, 5000: ((0,), (0.01, 0.02, 0.05))},
    "10-D mixture": {**_SMALL, 5000: ((0,), (0.01, 0.05, 0.1))},
}


def _known_split(density, n, seed):
    test = density.sample(N_TEST, 999)
    return density.sample(n, seed), test, density.log_prob(test)


def _real_split(X, seed, discrete):
    train, test = train_test_split(X, test_size=0.2, random_state=seed)
    if discrete:  # the peers get one fixed draw of the dequantization noise
        rng = np.random.default_rng(seed)
        return (
            train,
            test,
            (
                train + rng.uniform(size=train.shape),
                test + rng.uniform(size=test.shape),
            ),
        )
    return train, test, (train, test)


def _engel():
    import statsmodels.api as sm

    return sm.datasets.engel.load_pandas().data.to_numpy(float)


REPORT_KNOWN = {
    "8 gaussians": (KNOWN_DENSITIES["8 gaussians"], (200, 1000), (0, 1)),
    "two rings": (two_rings(), (200, 1000), (0, 1)),
    "10-D mixture": (KNOWN_DENSITIES["10-D mixture"], (10_000,), (0,)),
    "two spirals": (KNOWN_DENSITIES["two spirals"], (10_000,), (0,)),
}
REPORT_REAL = {
    "engel (statsmodels)": (_engel, False, (0, 1, 2)),
    "breast_cancer": (lambda: load_breast_cancer().data, False, (0, 1, 2)),
    "digits (dequantized)": (lambda: load_digits().data, True, (0, 1)),
}


# The detector's tasks on statsmodels' survey sets (``anomaly_detection``'s
# selection group since this study looked at them).
ANOMALY_REPORT = {
    name: TASKS[name][1]
    for name in ("anes96, vote 1 as anomalies", "fair, any affair as anomalies")
}


def anomaly(only=None):
    """The detector's runs; ``only``: the names of the tasks to run."""
    tasks = [
        ("report", name, split)
        for name, load in ANOMALY_REPORT.items()
        for split in protocol_splits(*load())
    ] + [
        ("benchmark", name, (seed, train, test, truth))
        for name, seed, train, test, truth in benchmark_splits(groups=("tuned",))
    ]
    for group, name, (seed, train, test, truth) in tasks:
        if only and name not in only:
            continue
        detectors = {
            "skflow sigma=0.01": FlowMatchingOutlierDetector(
                sigma=0.01, random_state=seed
            ),
            'skflow sigma="auto"': FlowMatchingOutlierDetector(random_state=seed),
            "KDE (Scott, exact)": ScottKDE(),
        }
        for model, detector in detectors.items():
            anomaly_score = -detector.fit(train).score_samples(test)
            _record(
                {
                    "part": "anomaly",
                    "group": group,
                    "set": name,
                    "n": len(train),
                    "seed": seed,
                    "model": model,
                    "roc_auc": roc_auc_score(truth, anomaly_score),
                    "average_precision": average_precision_score(truth, anomaly_score),
                    "sigma": getattr(detector, "sigma_", None),
                }
            )


def _record(row):
    print(json.dumps(row), flush=True)
    with RUNS.open("a") as file:
        file.write(json.dumps(row) + "\n")


def _skflow(sigma, seed, train, test, metric):
    model = FlowMatchingDensity(sigma=sigma, random_state=seed)
    _, seconds = timed(model.fit, train)
    return {
        "value": float(metric(model.score_samples(test))),
        "sigma": model.sigma_,
        "fit_seconds": seconds,
        "n_iter": model.n_iter_,
    }


def _peers(seed, train, test, metric):
    for name, model in (
        ("KDE (CV)", CrossValidatedKDE(seed)),
        ("GMM (BIC)", BICGaussianMixture(seed)),
    ):
        yield name, float(metric(model.fit(train).score_samples(test)))


def selection():
    for name, sizes in SELECTION.items():
        density = KNOWN_DENSITIES[name]
        for n, (seeds, sigmas) in sizes.items():
            for seed in seeds:
                train, test, log_p = _known_split(density, n, seed)
                metric = lambda log_q, log_p=log_p: np.mean(log_p - log_q)  # noqa: E731
                for sigma in sigmas:
                    result = _skflow(sigma, seed, train, test, metric)
                    _record(
                        {
                            "part": "selection",
                            "set": name,
                            "n": n,
                            "seed": seed,
                            "model": f"skflow sigma={sigma}",
                            **result,
                        }
                    )
                if n < 5000:
                    kde = CrossValidatedKDE(seed).fit(train)
                    _record(
                        {
                            "part": "selection",
                            "set": name,
                            "n": n,
                            "seed": seed,
                            "model": "KDE (CV)",
                            "value": float(metric(kde.score_samples(test))),
                        }
                    )


def report(only=None):
    """The report's runs; ``only``: the names of the sets to run."""
    for name, (density, sizes, seeds) in REPORT_KNOWN.items():
        if only and name not in only:
            continue
        for n in sizes:
            for seed in seeds:
                train, test, log_p = _known_split(density, n, seed)
                metric = lambda log_q, log_p=log_p: np.mean(log_p - log_q)  # noqa: E731
                rows = [
                    ("skflow sigma=0.01", _skflow(0.01, seed, train, test, metric)),
                    ('skflow sigma="auto"', _skflow("auto", seed, train, test, metric)),
                ]
                if n < 10_000:
                    rows += [
                        (p, {"value": v}) for p, v in _peers(seed, train, test, metric)
                    ]
                for model, result in rows:
                    _record(
                        {
                            "part": "report",
                            "set": name,
                            "n": n,
                            "seed": seed,
                            "kind": "kl",
                            "model": model,
                            **result,
                        }
                    )
    for name, (load, discrete, seeds) in REPORT_REAL.items():
        if only and name not in only:
            continue
        X = load()
        for seed in seeds:
            train, test, (peer_train, peer_test) = _real_split(X, seed, discrete)
            rows = [
                ("skflow sigma=0.01", _skflow(0.01, seed, train, test, np.mean)),
                ('skflow sigma="auto"', _skflow("auto", seed, train, test, np.mean)),
            ]
            rows += [
                (p, {"value": v})
                for p, v in _peers(seed, peer_train, peer_test, np.mean)
            ]
            for model, result in rows:
                _record(
                    {
                        "part": "report",
                        "set": name,
                        "n": len(train),
                        "seed": seed,
                        "kind": "loglik",
                        "model": model,
                        **result,
                    }
                )


def _table(runs):
    keys = sorted({(r["set"], r["n"]) for r in runs}, key=lambda k: (k[0], k[1]))

    def order(model):  # fixed sigmas by value, then "auto", then the peers
        if model.startswith("skflow sigma="):
            value = model.removeprefix("skflow sigma=")
            return (0, float(value)) if value[0].isdigit() else (1, 0.0)
        return (2, model)

    models = sorted({r["model"] for r in runs}, key=order)
    lines = [
        f"| set | rows | {' | '.join(models)} |",
        "|---|---|" + "---|" * len(models),
    ]
    for set_name, n in keys:
        cells = []
        for model in models:
            values = [
                r["value"]
                for r in runs
                if (r["set"], r["n"], r["model"]) == (set_name, n, model)
            ]
            cells.append(f"{np.mean(values):.3f}" if values else "")
        lines.append(f"| {set_name} | {n:,} | {' | '.join(cells)} |")
    return lines


def _anomaly_table(runs):
    models = list(dict.fromkeys(r["model"] for r in runs))
    sets = list(dict.fromkeys(r["set"] for r in runs))
    lines = [
        f"| set | rows fitted | {' | '.join(models)} |",
        "|---|---|" + "---|" * len(models),
    ]

    def mean(metric, model, name=None):
        return np.mean(
            [
                r[metric]
                for r in runs
                if r["model"] == model and name in (None, r["set"])
            ]
        )

    for name in sets:
        n = int(np.mean([r["n"] for r in runs if r["set"] == name]))
        cells = [
            f"{mean('roc_auc', m, name):.3f} / {mean('average_precision', m, name):.3f}"
            for m in models
        ]
        lines.append(f"| {name} | {n:,} | {' | '.join(cells)} |")
    cells = [
        f"**{mean('roc_auc', m):.3f} / {mean('average_precision', m):.3f}**"
        for m in models
    ]
    lines.append(f"| mean | | {' | '.join(cells)} |")
    return lines


def write():
    runs = [json.loads(line) for line in RUNS.read_text().splitlines()]
    results = {**environment("benchmarks.studies.smoothing_by_size"), "runs": runs}
    selection_sets = set(SELECTION)
    report = [r for r in runs if r["part"] == "report"]
    lines = [
        '# sigma="auto": smoothing that follows the data\'s size (issue 21)',
        "",
        environment_line(results),
        "",
        "With `--part selection`, `--part report`, `--part anomaly --sets ...` "
        "(the module's docstring), then `--write`. Selection runs at 200 and "
        "1,000 rows were made by the same splits from a scratch script before "
        "the study existed. Mean over the seeds "
        "(known sets: 0 and 1, seed 0 alone at 5,000 and 10,000 rows; real "
        "sets: 0, 1, 2, digits 0 and 1). Every model with its defaults but "
        'sigma; `sigma="auto"` is `1.3 n^-(1 / (d + 4) + 0.3)`.',
        "",
        'Decision: `sigma="auto"` is an option and the default stays 0.01. '
        "The rule helps small low-dimensional sets, digits and engel, and "
        "costs nothing at 10,000 rows, but loses 5 to 7 nats on every seed "
        "of breast_cancer (30 correlated features), where the issue asks "
        "that nothing in 10-D and above get worse.",
        "",
        "## Selection: the sets the rule was chosen on",
        "",
        "Test KL (nats, lower is better) on 5,000 fresh rows.",
        "",
    ]
    lines += _table([r for r in runs if r["part"] == "selection"])
    lines += [
        "",
        "## Report: sets that played no part in choosing the rule",
        "",
        "Known densities: test KL (nats, lower is better).",
        "",
    ]
    lines += _table(
        [r for r in report if r["kind"] == "kl" and r["set"] not in selection_sets]
    )
    lines += [
        "",
        "Real sets: mean test log-likelihood (higher is better; digits "
        "dequantized as in `density_quality.md`: skflow its own draw, the peers "
        "one fixed draw).",
        "",
    ]
    lines += _table([r for r in report if r["kind"] == "loglik"])
    lines += [
        "",
        "## Large data: the selection sets at 10,000 rows, where 0.01 was tuned",
        "",
        "Test KL (nats, lower is better); one seed.",
        "",
    ]
    lines += _table([r for r in report if r["set"] in selection_sets])
    anomaly = [r for r in runs if r["part"] == "anomaly"]
    for group, title in (
        ("report", "Anomaly detection on sets no benchmark here had used"),
        ("benchmark", "Anomaly detection on `anomaly_detection.md`'s digits task"),
    ):
        lines += [
            "",
            f"## {title}",
            "",
            "ROC-AUC / average precision (higher is better), the protocol of "
            "`anomaly_detection.md` (fit on 60% of the inliers; seeds 0, 1, 2).",
            "",
        ]
        lines += _anomaly_table([r for r in anomaly if r["group"] == group])
    write_results("smoothing_by_size", results, lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=("selection", "report", "anomaly"))
    parser.add_argument("--sets", nargs="+", help="only these sets or tasks")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.part == "selection":
        selection()
    elif args.part == "report":
        report(args.sets)
    elif args.part == "anomaly":
        anomaly(args.sets)
    if args.write:
        write()


if __name__ == "__main__":
    main()
