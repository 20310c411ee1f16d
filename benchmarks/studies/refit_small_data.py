"""Refit on every row after early stopping, on small data (issues 21 and 22).

Early stopping holds out 10% of the rows (at most 512) to choose a
checkpoint, and the model it keeps never trains on them. On a few hundred
rows that is a tenth of the data, and both small-data gaps of the open
issues (the unconditional density's overfitting on small sets, issue 21's
lever 2; the conditional density's 0.05 nats behind a linear Gaussian on
diabetes, 353 rows, issue 22) are where data is scarcest. One variant,
against the defaults:

- ``refit``: the default fit, then the same initial weights trained again
  on every row, held-out rows included, with the same schedule (the same
  ``max_iter``, warm-up and decay), stopped at the step of the checkpoint
  the default kept; the model is the weights' moving average at that step.
  The default's held-out scores (``validation_scores_``) and steps
  (``n_iter_``) are kept, so a run's ``n_iter`` is the default's: a check
  that its first fit reproduces the default's. It costs up to a second fit.

Sets and references, all kept for choosing (none is in a report):

- ``FlowMatchingDensity``: ``steps_by_size.py``'s 27 fits (200, 500 and
  1,000 rows of two spirals, moons and the 10-D mixture, seeds 0-2, test
  KL on 1,000 fresh rows), against its ``now`` runs
  (``results/steps_by_size.json``).
- ``ConditionalFlowMatchingDensity``: ``conditional_smoothing.py``'s four
  small sets (star98, grunfeld, macrodata, skewed at 300 rows; seeds 0-2;
  test log p(y | x)), against its ``default`` runs
  (``results/conditional_smoothing.json``).

Decision rules, set before the runs:

- Density: ``steps_by_size.py``'s rule. ``refit`` passes if its mean KL lead
  over ``now`` (paired by set, size and seed) is more than twice its
  standard error and no (set, size) mean of it is more than 5% above
  ``now``'s.
- Conditional: ``conditional_smoothing.py``'s rule. ``refit`` passes if its
  mean gain over the 12 set-and-seed pairs is positive and more than twice
  its standard error, and no set loses more than 0.02 nats.
- What passes is confirmed on sets that chose nothing, as those studies
  confirm: the density on ``density_quality.py``'s pinwheel at 200, 1,000
  and 5,000 rows (confirmed if the mean KL is lower at every size), the
  conditional density on ``conditional_density.py``'s diabetes and engel
  (confirmed if the mean gain over the two is positive and neither loses
  more than 0.02 nats), each against its benchmark's default runs. A
  confirmed variant becomes the default where early stopping holds out a
  full 10% (fewer than 5,120 rows), with its tests; larger fits, whose
  512 held-out rows are at most 5% of the data, stay as they are.

Outcome of the selection runs: ``refit`` passes both rules (density: KL
lead 0.027 +- 0.009 nats, 22 of 27 fits ahead, no cell worse; conditional:
gain 0.073 +- 0.032 nats, every set ahead), so both confirmations run.

The detector, ``FlowMatchingOutlierDetector``, fits through the same code,
but its defaults were chosen for ranking anomalies, not for density
(``results/density_and_ranking.md``: a better density did not rank
better). A third part, set after the selection runs and before any
detector run: the detector with and without ``refit`` (both fitted here)
on ``anomaly_detection.py``'s selection group (anes96, fair; its protocol
and seeds 0-2). Rule: the detector refits too if its mean ROC-AUC and mean
average precision over the six splits are each no lower than without, and
neither set's mean ROC-AUC falls by more than 0.01; then confirmed on the
report group (modechoice, randhie) by the same rule. Otherwise the
detector fits as before.

Run from the repository root (about 30 min on two cores):

    python -m benchmarks.studies.refit_small_data --shard 0/2 &
    python -m benchmarks.studies.refit_small_data --shard 1/2; wait
    python -m benchmarks.studies.refit_small_data --write
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmarks import anomaly_detection, conditional_density, density_quality
from benchmarks._common import RESULTS, sharded_study, timed, with_recipe
from benchmarks.studies import capacity_by_size, conditional_smoothing, steps_by_size
from benchmarks.studies.conditional_levers import split_set
from skflow import (
    ConditionalFlowMatchingDensity,
    FlowMatchingDensity,
    FlowMatchingOutlierDetector,
)
from skflow._flow_estimator import effective_rows
from skflow._recipe import Recipe
from skflow._training import train_vector_field

RUNS = Path("/tmp/refit_small_data_runs.jsonl")
REFIT = "refit"
SEEDS = steps_by_size.SEEDS
CONDITIONAL_SETS = conditional_smoothing.SHORT_SETS
CONDITIONAL_REPORT_SETS = conditional_smoothing.REPORT_SETS
# Set from the selection runs, before the confirmation runs.
CONFIRM_DENSITY = True
CONFIRM_CONDITIONAL = True
# Set from the detector's selection runs, before its report runs.
CONFIRM_DETECTOR = None


def refitted(base):
    """``base`` whose fit, after early stopping, trains its initial weights
    again on every row and stops at the step of the checkpoint kept."""

    class Refitted(base):
        def _train(
            self,
            field,
            path,
            data,
            weights,
            sample_weight,
            dequantize,
            rng,
            generator,
            n_targets=None,
        ):
            start, every_row = copy.deepcopy(field), weights.clone()
            field, loss_curve, scores, held_out = super()._train(
                field,
                path,
                data,
                weights,
                sample_weight,
                dequantize,
                rng,
                generator,
                n_targets,
            )
            if held_out is None:
                return field, loss_curve, scores, held_out
            recipe = self._recipe
            max_iter = self._max_iter(len(data))
            kept = recipe.validation_every(max_iter) * (int(np.argmax(scores)) + 1)
            n_moving = data.shape[1] if n_targets is None else n_targets
            field, _, _ = train_vector_field(
                start,
                path,
                data,
                every_row,
                max_iter=max_iter,
                batch_size=self.batch_size,
                learning_rate=self.learning_rate,
                generator=generator,
                dequantize=dequantize,
                # One check, at the step kept, that always stops the loop:
                # the moving average there is the model.
                validation_score=lambda module: 0.0,
                validation_every=min(kept, max_iter),
                n_iter_no_change=0,
                warmup_fraction=recipe.warmup_fraction,
                ema_decay=recipe.ema_decay,
                time_sampling=recipe.time_sampling,
                time_skew=recipe.time_skew,
                gradient_clip_norm=recipe.gradient_clip_norm,
                n_targets=n_targets,
                condition_noise=0.0
                if n_targets is None
                else recipe.condition_noise(
                    effective_rows(every_row), data.shape[1] - n_targets
                ),
                divergence_weight=recipe.divergence_weight(
                    n_moving, conditional=n_targets is not None
                )
                if path.has_divergence_residual
                else 0.0,
                divergence_rows=recipe.divergence_matching_rows,
            )
            return field, loss_curve, scores, held_out

    Refitted.__name__ = Refitted.__qualname__ = f"Refitted{base.__name__}"
    return Refitted


def _jobs():
    density = [
        ("density", n, seed, name)
        for n in steps_by_size.SIZES
        for seed in SEEDS
        for name in steps_by_size.SET_NAMES
    ]
    conditional = [
        ("conditional", None, seed, name) for name in CONDITIONAL_SETS for seed in SEEDS
    ]
    jobs = density + conditional
    if CONFIRM_DENSITY:
        jobs += [
            ("density report", n, seed, capacity_by_size.REPORT_SET)
            for n in capacity_by_size.REPORT_SIZES
            for seed in SEEDS
        ]
    if CONFIRM_CONDITIONAL:
        jobs += [
            ("conditional report", None, seed, name)
            for name in CONDITIONAL_REPORT_SETS
            for seed in SEEDS
        ]
    groups = ("selection", "report") if CONFIRM_DETECTOR else ("selection",)
    jobs += [
        ("detector", None, seed, name)
        for name, _, _ in anomaly_detection.datasets(groups)
        for seed in SEEDS
    ]
    return jobs


def _detector_runs(seed, name):
    """The detector with and without ``refit`` on one protocol split."""
    group = anomaly_detection.TASKS[name][0]
    (split,) = [s for s in anomaly_detection.splits((group,)) if s[:2] == (name, seed)]
    _, _, train, test, truth = split
    runs = []
    for rule, detector in (
        ("default", FlowMatchingOutlierDetector),
        (REFIT, _DETECTOR),
    ):
        model = detector(random_state=seed)
        _, seconds = timed(model.fit, train)
        anomaly_score = -model.score_samples(test)
        runs.append(
            {
                "part": "detector",
                "n_train": None,
                "seed": seed,
                "set": name,
                "group": anomaly_detection.TASKS[name][0],
                "rule": rule,
                "roc_auc": roc_auc_score(truth, anomaly_score),
                "average_precision": average_precision_score(truth, anomaly_score),
                "n_iter": model.n_iter_,
                "fit_seconds": seconds,
            }
        )
    return runs


def _run(part, n_train, seed, name):
    if part == "detector":
        return _detector_runs(seed, name)
    head = {"part": part, "rule": REFIT, "seed": seed, "set": name}
    if part == "density":
        row = steps_by_size.fit_and_score(
            {REFIT: Recipe()}, REFIT, n_train, seed, name, base=_DENSITY
        )
        return {**row, **head}
    if part == "density report":
        factories = {REFIT: lambda: _DENSITY(random_state=seed)}
        (row,) = density_quality.known_density_run(name, n_train, seed, factories)
        return {**row, **head, "n_train": n_train}
    if part == "conditional":
        X, X_test, y, y_test = split_set(name, seed)
    else:
        X, y, X_test, y_test, _ = conditional_density.real_split(
            name, seed, conditional_density.SIZES["full"]
        )
    model = _CONDITIONAL(random_state=seed)
    _, seconds = timed(model.fit, X, y)
    return {
        **head,
        "n_train": None,
        "variant": REFIT,
        "rows_fitted": len(X),
        "conditions": X.shape[1],
        "targets": 1 if np.ndim(y) == 1 else np.shape(y)[1],
        "log_likelihood": float(model.score(X_test, y_test)),
        "n_iter": model.n_iter_,
        "fit_seconds": seconds,
    }


_DENSITY = with_recipe(Recipe(), refitted(FlowMatchingDensity))
_CONDITIONAL = with_recipe(Recipe(), refitted(ConditionalFlowMatchingDensity))
_DETECTOR = with_recipe(Recipe(), refitted(FlowMatchingOutlierDetector))


def _committed(study):
    return json.loads((RESULTS / f"{study}.json").read_text())["runs"]


def report(results):
    runs = results["runs"]
    before = [r for r in _committed("steps_by_size") if r["rule"] == "now"]
    density = [r for r in runs if r["part"] == "density"]
    lines = steps_by_size.small_data_report(
        {**results, "runs": before + density},
        {"now": Recipe(), REFIT: Recipe()},
        "# Refit on every row after early stopping, on small data (issues 21 and 22)",
        candidate=REFIT,
    )
    same = sum(
        (r["set"], r["n_train"], r["seed"], r["n_iter"])
        in {(b["set"], b["n_train"], b["seed"], b["n_iter"]) for b in before}
        for r in density
    )
    lines += [
        "",
        f"{same} of {len(density)} refits took the steps of their `now` run "
        "before refitting (their first fit reproduces it).",
    ]
    report_runs = [r for r in runs if r["part"] == "density report"]
    if report_runs:
        lines += capacity_by_size.confirmation(report_runs, REFIT)
    default = [
        r
        for r in _committed("conditional_smoothing")
        if r["part"] == "select" and r["variant"] == "default"
    ]
    conditional = [{**r, "variant": REFIT} for r in runs if r["part"] == "conditional"]
    if conditional:
        lines += [
            "",
            "## ConditionalFlowMatchingDensity",
            "",
            "Test log p(y | x) (nats per row, higher is better), mean over "
            f"seeds {list(SEEDS)}; in brackets, the mean gain over the default "
            "(`results/conditional_smoothing.json`) and on how many seeds it "
            "is positive.",
            "",
            *conditional_smoothing.selection_table(
                default + conditional, list(CONDITIONAL_SETS), ("default", REFIT)
            ),
        ]
    confirmation = [r for r in runs if r["part"] == "conditional report"]
    if confirmation:
        default = [
            {
                "set": r["dataset"],
                "seed": r["seed"],
                "variant": "default",
                "rows_fitted": r["n_train"],
                "conditions": r["n_features"],
                "targets": r["n_targets"],
                "log_likelihood": r["loglik"],
                "n_iter": r["n_iter"],
            }
            for r in _committed("conditional_density")
            if r["model"] == conditional_density.SKFLOW
            and r["dataset"] in CONDITIONAL_REPORT_SETS
        ]
        lines += [
            "",
            "## Confirmation on `conditional_density.py`'s sets",
            "",
            *conditional_smoothing.selection_table(
                default + confirmation,
                list(CONDITIONAL_REPORT_SETS),
                ("default", REFIT),
            ),
        ]
    detector = [r for r in runs if r["part"] == "detector"]
    if detector:
        lines += ["", "## FlowMatchingOutlierDetector", "", *_detector_table(detector)]
    return lines


def _detector_table(runs):
    """ROC-AUC and AP with and without ``refit``, per set and per group."""
    by = {(r["set"], r["seed"], r["rule"]): r for r in runs}
    lines = [
        f"`anomaly_detection.py`'s protocol, mean over seeds {list(SEEDS)}; "
        "both detectors fitted in this run.",
        "",
        "| group | set | ROC-AUC default | ROC-AUC refit | AP default | AP refit |",
        "|---|---|---|---|---|---|",
    ]
    for group in ("selection", "report"):
        names = list(dict.fromkeys(r["set"] for r in runs if r["group"] == group))
        if not names:
            continue
        for name in names:
            cells = [
                f"{np.mean([by[name, s, rule][metric] for s in SEEDS]):.3f}"
                for metric in ("roc_auc", "average_precision")
                for rule in ("default", REFIT)
            ]
            lines.append(f"| {group} | {name} | " + " | ".join(cells) + " |")
        mean = {
            (metric, rule): np.mean(
                [by[n, s, rule][metric] for n in names for s in SEEDS]
            )
            for metric in ("roc_auc", "average_precision")
            for rule in ("default", REFIT)
        }
        worst = min(
            np.mean(
                [
                    by[n, s, REFIT]["roc_auc"] - by[n, s, "default"]["roc_auc"]
                    for s in SEEDS
                ]
            )
            for n in names
        )
        passes = (
            mean["roc_auc", REFIT] >= mean["roc_auc", "default"]
            and mean["average_precision", REFIT] >= mean["average_precision", "default"]
            and worst >= -0.01
        )
        lines.append(
            f"| {group} | mean | {mean['roc_auc', 'default']:.3f} | "
            f"{mean['roc_auc', REFIT]:.3f} | "
            f"{mean['average_precision', 'default']:.3f} | "
            f"{mean['average_precision', REFIT]:.3f} |"
        )
        lines.append("")
        lines.append(
            f"{group}: the worst set's ROC-AUC change is {worst:+.3f}; the rule "
            f"{'passes' if passes else 'fails'}."
        )
        lines.append("")
    return lines


def main():
    sharded_study(
        __spec__.name,
        __doc__.splitlines()[0],
        "refit_small_data",
        jobs=_jobs,
        run_one=_run,
        runs=RUNS,
        key=("part", "n_train", "seed", "set"),
        report=report,
    )


if __name__ == "__main__":
    main()
