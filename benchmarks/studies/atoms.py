"""How wide the detector's cells around atoms should be (issue 21).

An atom is a value of a column that is not whole numbers yet carries a
share of the rows: a zero amount, a floor, a default. A density of the
values as they are puts a spike about ``sigma`` wide on it, so a row on
the atom looks typical whatever its other columns. The detector spreads
each atom over a cell ``Recipe.atom_width`` of its column's standard
deviations wide (``FlowMatchingOutlierDetector``'s ``dequantize``); this
study chose that width on sets that ``anomaly_detection.py`` does not
report on, before the report sets were run with it.

Sets (``anomaly_detection``'s protocol: fit on 60% of the inliers, score
the other inliers and every anomaly; seeds 0, 1, 2):

- ``anes96 with logpopul``: anomaly_detection's anes96 task with the log
  population kept (24% of the rows at its floor) and the population
  itself left out;
- ``star98, low pass rates as anomalies``: California school districts,
  the 15% with the lowest share of pupils above the national median as
  anomalies (PCTCHRT and PCTYRRND are 0 for 88% and 65% of them);
- ``zero-inflated (synthetic)``: four correlated Gaussian columns and two
  amounts, 0 for half the rows, log-normal with the first two columns
  otherwise; anomalies (10%) flip the sign of the first two and shift one;
- ``fair, any affair as anomalies``: anomaly_detection's selection task,
  whose half-integer columns (age, years married, children) are a few
  levels each.

Models: the detector with its atoms as they are (``_spreads_atoms`` off),
with cells 0.3, 1 and 2 standard deviations wide, and exact KDE (Scott).

A first run spread every value that carried 5% of its column, fair's
levels included, and lost 0.014 to 0.022 ROC-AUC on fair, where every row
sits on a level. Since then a column of at most 20 distinct values, of
more than two atoms, or with less than 5% of its rows off its atoms keeps
them (``skflow._preprocessing.find_atoms``; the cap on atoms came from
iris in ``anomaly_detection``'s tuned group, whose rounded measurements
made up to nine atoms a column and lost 0.047 ROC-AUC spread). Under the
final rule fair gets no atoms and star98 one column of two (PCTCHRT has at
most 20 values in a split): their runs and anes96's were made again; the
synthetic set's two atoms (one a column) are the same under every rule.

Run from the repository root on an idle machine (``bench`` extra):

    python -m benchmarks.studies.atoms --shard 0/2 &
    python -m benchmarks.studies.atoms --shard 1/2; wait
    python -m benchmarks.studies.atoms --write

Each shard (one torch thread) appends its runs to ``/tmp/atoms_runs.jsonl``;
``--write`` writes ``results/atoms.{json,md}`` (about 15 minutes in all).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmarks._common import (
    RESULTS,
    environment_line,
    read_runs,
    sharded_study,
    timed,
)
from benchmarks.anomaly_detection import (
    SEEDS,
    TASKS,
    _statsmodels_task,
    protocol_splits,
)
from benchmarks.density_peers import ScottKDE
from skflow import FlowMatchingOutlierDetector
from skflow._preprocessing import find_atoms, integer_columns

RUNS = Path("/tmp/atoms_runs.jsonl")
FIRST_RULE_RUNS = RESULTS / "atoms_first_rule_runs.jsonl"
WIDTHS = (0.3, 1.0, 2.0)


def _star98():
    import statsmodels.api as sm

    data = sm.datasets.star98.load_pandas().data
    passed = data["NABOVE"] / (data["NABOVE"] + data["NBELOW"])
    X = data.drop(columns=["NABOVE", "NBELOW"]).to_numpy(float)
    return X, (passed < passed.quantile(0.15)).to_numpy()


def _zero_inflated(n=3000, seed=7):
    rng = np.random.default_rng(seed)
    gaussian = rng.multivariate_normal(np.zeros(4), 0.5 * np.eye(4) + 0.5, n)
    is_anomaly = rng.random(n) < 0.1
    gaussian[is_anomaly, :2] *= -1
    gaussian[is_anomaly, 0] += 1.0
    amounts = [
        np.where(
            rng.random(n) < 0.5,
            0.0,
            np.exp(0.5 * gaussian[:, j] + 0.5 * rng.normal(size=n)),
        )
        for j in range(2)
    ]
    return np.column_stack([gaussian, *amounts]), is_anomaly


SETS = {
    "anes96 with logpopul": lambda: _statsmodels_task(
        "anes96", lambda data: data["vote"] == 1, ("vote", "popul")
    ),
    "star98, low pass rates as anomalies": _star98,
    "zero-inflated (synthetic)": _zero_inflated,
    "fair, any affair as anomalies": TASKS["fair, any affair as anomalies"][1],
}


class _AtomsAsTheyAre(FlowMatchingOutlierDetector):
    _spreads_atoms = False


def _spread(width):
    class Spread(FlowMatchingOutlierDetector):
        _recipe = dataclasses.replace(
            FlowMatchingOutlierDetector._recipe, atom_width=width
        )

    return Spread


MODELS = {
    "skflow, atoms as they are": _AtomsAsTheyAre,
    **{f"skflow, cells {width:g} sd wide": _spread(width) for width in WIDTHS},
    "KDE (Scott, exact)": None,
}


def _jobs():
    for name in SETS:
        for seed in SEEDS:
            yield name, seed


def _run(name, seed):
    print((name, seed), flush=True)
    X, is_anomaly = SETS[name]()
    ((train, test, truth),) = [
        split[1:] for split in protocol_splits(X, is_anomaly) if split[0] == seed
    ]
    runs = []
    for model_name, cls in MODELS.items():
        model = ScottKDE() if cls is None else cls(random_state=seed)
        _, seconds = timed(model.fit, train)
        anomaly_score = -model.score_samples(test)
        runs.append(
            {
                "set": name,
                "seed": seed,
                "model": model_name,
                "rows_fitted": len(train),
                "fit_seconds": seconds,
                "roc_auc": roc_auc_score(truth, anomaly_score),
                "average_precision": average_precision_score(truth, anomaly_score),
            }
        )
    return runs


def _columns_with_atoms(name):
    """The columns the detector spreads, on seed 0's fitting rows."""
    _, train, _, _ = next(protocol_splits(*SETS[name]()))
    recipe = FlowMatchingOutlierDetector._recipe
    atoms = find_atoms(
        train,
        np.ones(len(train)),
        integer_columns(train),
        recipe.atom_share,
        recipe.atom_max_count,
    )
    return int((~np.isnan(atoms)).any(axis=1).sum())


def report(results):
    runs = results["runs"]
    models = list(MODELS)
    lines = [
        "# The detector's cells around atoms",
        "",
        environment_line(results),
        "",
        "ROC-AUC / average precision (higher is better), mean over seeds "
        "0, 1, 2, `anomaly_detection.md`'s protocol; the sets and models "
        "are in the study's docstring. Columns with atoms: the columns of "
        "the fitting rows (seed 0) that the detector spreads "
        "(`skflow._preprocessing.find_atoms`).",
        "",
        "Decision (`Recipe.atom_width`): cells 1 standard deviation wide, "
        "by the mean ROC-AUC over these sets, the rule set before the runs. "
        "The gain is the synthetic set's, whose atoms say nothing of the "
        "anomalies; on the real sets with an atom (anes96, star98) spreading "
        "costs a little, within the seeds' noise. 1 and 2 standard "
        "deviations are level on average, and the narrower cell changes the "
        "data less.",
        "",
        "| set | rows fitted | columns with atoms | " + " | ".join(models) + " |",
        "|---|---|---|" + "---|" * len(models),
    ]
    sets = list(dict.fromkeys(r["set"] for r in runs))
    means = {}
    for name in sets:
        cells = []
        for model in models:
            chosen = [r for r in runs if r["set"] == name and r["model"] == model]
            auc = np.mean([r["roc_auc"] for r in chosen])
            ap = np.mean([r["average_precision"] for r in chosen])
            means[name, model] = auc, ap
            cells.append(f"{auc:.3f} / {ap:.3f}")
        first = next(r for r in runs if r["set"] == name)
        lines.append(
            f"| {name} | {first['rows_fitted']:,} | "
            f"{_columns_with_atoms(name)} | " + " | ".join(cells) + " |"
        )
    cells = [
        "{:.3f} / {:.3f}".format(
            *np.mean([means[name, model] for name in sets], axis=0)
        )
        for model in models
    ]
    lines.append("| **mean** | | | " + " | ".join(cells) + " |")
    first = read_runs(FIRST_RULE_RUNS)
    cells = []
    for model in models:
        chosen = [r for r in first if r["model"] == model]
        cells.append(
            "{:.3f} / {:.3f}".format(
                np.mean([r["roc_auc"] for r in chosen]),
                np.mean([r["average_precision"] for r in chosen]),
            )
        )
    lines += [
        "",
        "The first rule, every value carrying 5% of its column an atom, "
        "spread fair's levels too (`results/atoms_first_rule_runs.jsonl`):",
        "",
        "| set | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
        f"| {first[0]['set']} | " + " | ".join(cells) + " |",
    ]
    return lines


def main():
    sharded_study(
        __spec__.name,
        __doc__.splitlines()[0],
        "atoms",
        jobs=_jobs,
        run_one=_run,
        runs=RUNS,
        key=("set", "seed"),
        report=report,
    )


if __name__ == "__main__":
    main()
