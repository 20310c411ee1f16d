"""Smoother, shorter or slower conditional fits on small data (issue 22).

``benchmarks/conditional_density.py`` leaves ``ConditionalFlowMatchingDensity``
behind a linear Gaussian on diabetes (353 rows, 10 conditions), where every
seed's fit keeps its first checkpoint: the field overfits within 80 steps.
Two smoothings that issue 21 measured for the unconditional density, each
alone and together, against the defaults (``default``):

- ``sigma rule``: the path's sigma of ``FlowMatchingDensity(sigma="auto")``,
  ``1.3 n^-(1 / (k + 4) + 0.3)`` for n fitted rows and k targets, instead of
  0.01 (``results/smoothing_by_size.md``: it helped small low-dimensional
  densities; it lost in 30-D, and targets here have 1 or 2 coordinates).
- ``Fourier / 2``: the random Fourier features of y with frequencies half as
  spread (``Recipe.fourier_scale_factor = 0.5``;
  ``results/capacity_by_size.md``: it helped every small selection set of
  the unconditional density).
- ``both``.

Sets, none used by ``benchmarks/conditional_density.py``: those of
``results/conditional_levers.md`` (statsmodels' ``star98`` with 2 targets,
``grunfeld``, ``macrodata``, ``skewed`` at 300 fitting rows, ``ring`` and
``two-branch 2-D`` at 4,000), seeds 0, 1, 2.

Decision rules, set before the runs (a variant's gain: its mean test log
p(y | x) minus ``default``'s, per set, mean over seeds):

- A variant passes if its mean gain over the six sets is positive and more
  than twice its standard error (over the 18 set-and-seed gains), and no
  set loses more than 0.02 nats. Of those that pass, the one with the larger
  mean gain is confirmed.
- Confirmation, on ``conditional_density.py``'s six sets and seeds (the
  report sets, split and fitted as that benchmark does; no peer refitted):
  the variant becomes the default if its mean gain over those sets is
  positive and no set loses more than 0.02 nats.

Outcome of the first round: no variant passes. All three lose on star98
(2 targets, 20 conditions) on every seed, by more than the rule's 0.02
nats, so the rule could no longer pass once its three seeds had run;
the 4,000-row sets were not run.

Second round, set after the first and before its runs: the training
schedule. On the small sets every default fit keeps its first checkpoint
(step 80 of ``max_iter="auto"``'s 2,000, the learning rate still warming
up). ``steps_by_size.py``'s shorter schedules, which had not helped the
unconditional density:

- ``sqrt``: 70 sqrt(n) steps without the floor of 2,000 (at least 200),
  checks at least 20 steps apart;
- ``2 per row``: the same, at most 2 steps per row.

They change nothing above 816 rows (70 sqrt(n) >= 2,000), so they run on
the four small sets only (``default`` from the first round). The rule is
the first round's over those four sets (12 gains); the confirmation runs
on ``conditional_density.py``'s two sets under 816 rows, diabetes and
engel, with the same rule.

Outcome of the second round: neither schedule passes (each loses on
average, macrodata on every seed), so no confirmation ran and the
defaults stay. The small sets' seeds scatter by more than any variant
moves their mean: see the report's standard errors.

Third round, set after the second and before its runs, with the same
rule and sets: fits that reach their peak more gently.

- ``checks every 20``: held-out checks every 20 steps instead of 80
  (``validation_checks=100``, ``validation_min_steps_between=20``), so
  that a peak before step 80 can be kept; patience stays 10 checks.
- ``learning rate / 4``: ``learning_rate=5e-4`` instead of 2e-3, so that
  the field overfits later and the weights' average settles before.

A variant that passes and is confirmed on diabetes and engel is a
candidate default for small conditional sets, to be built with its tests.

Outcome of the third round: neither passes. Checks every 20 steps lose
on every set (they stop at fewer than half the default's steps: more
checks on 16 to 30 held-out rows likely pick too early); the lower
learning rate gains on grunfeld and the skewed
set but loses on star98 and macrodata.

Run from the repository root (about 30 min on two cores):

    python -m benchmarks.studies.conditional_smoothing --shard 0/2 &
    python -m benchmarks.studies.conditional_smoothing --shard 1/2; wait
    python -m benchmarks.studies.conditional_smoothing --write
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from benchmarks import conditional_density as report_benchmark
from benchmarks._common import environment_line, sharded_study, timed, with_recipe
from benchmarks.studies.conditional_levers import split_set
from benchmarks.studies.steps_by_size import RULES as SCHEDULES
from skflow import ConditionalFlowMatchingDensity
from skflow._recipe import Recipe

RUNS = Path("/tmp/conditional_smoothing_runs.jsonl")
SEEDS = (0, 1, 2)
VARIANTS = ("default", "sigma rule", "Fourier / 2", "both")
SHORT_SETS = ("star98", "grunfeld", "macrodata", "skewed (300 rows)")
SHORT_VARIANTS = ("sqrt", "2 per row")
GENTLE_VARIANTS = ("checks every 20", "learning rate / 4")
# Set from the selection runs, before the confirmation runs (None: none passed).
CONFIRMED = None
REPORT_SETS = ("diabetes", "engel")


def _model(variant, n_rows, n_targets, seed, dequantize=False):
    recipe = SCHEDULES.get(variant, Recipe())
    if variant in ("Fourier / 2", "both"):
        recipe = dataclasses.replace(recipe, fourier_scale_factor=0.5)
    sigma = 0.01
    if variant in ("sigma rule", "both"):
        sigma = recipe.sigma(n_rows, n_targets)
    if variant == "checks every 20":
        recipe = dataclasses.replace(
            recipe, validation_checks=100, validation_min_steps_between=20
        )
    learning_rate = 5e-4 if variant == "learning rate / 4" else 2e-3
    estimator = with_recipe(recipe, ConditionalFlowMatchingDensity)
    return estimator(
        sigma=sigma,
        learning_rate=learning_rate,
        dequantize=dequantize,
        random_state=seed,
    )


def _jobs():
    # The first round stopped before the 4,000-row sets (see the docstring).
    selection = [("select", name, seed) for name in SHORT_SETS for seed in SEEDS]
    schedules = [("schedule", name, seed) for name in SHORT_SETS for seed in SEEDS]
    gentle = [("gentle", name, seed) for name in SHORT_SETS for seed in SEEDS]
    if CONFIRMED is None:
        return selection + schedules + gentle
    return (
        selection
        + schedules
        + gentle
        + [("report", name, seed) for name in REPORT_SETS for seed in SEEDS]
    )


def study_split(name, seed):
    """X, X_test, y, y_test of a set for a seed: ``REPORT_SETS`` as the
    conditional benchmark splits them, the others as ``split_set`` does."""
    if name not in REPORT_SETS:
        return split_set(name, seed)
    # diabetes and engel: real sets, not dequantized by the benchmark.
    X, y, X_test, y_test, _ = report_benchmark.real_split(
        name, seed, report_benchmark.SIZES["full"]
    )
    return X, X_test, y, y_test


def _run(part, name, seed):
    dequantize = False
    X, X_test, y, y_test = study_split(name, seed)
    variants = {
        "select": VARIANTS,
        "schedule": SHORT_VARIANTS,
        "gentle": GENTLE_VARIANTS,
        "report": ("default", CONFIRMED),
    }[part]
    n_targets = 1 if np.ndim(y) == 1 else np.shape(y)[1]
    runs = []
    for variant in variants:
        model = _model(variant, len(X), n_targets, seed, dequantize)
        _, seconds = timed(model.fit, X, y)
        runs.append(
            {
                "part": part,
                "set": name,
                "seed": seed,
                "variant": variant,
                "rows_fitted": len(X),
                "conditions": X.shape[1],
                "targets": n_targets,
                "sigma": model.sigma,
                "log_likelihood": float(model.score(X_test, y_test)),
                "n_iter": model.n_iter_,
                "fit_seconds": seconds,
            }
        )
    return runs


def seed_gains(runs, sets, variant):
    """Per set, the per-seed gains of ``variant`` over ``default``."""
    by = {(r["set"], r["seed"], r["variant"]): r["log_likelihood"] for r in runs}
    return {
        name: np.array([by[name, s, variant] - by[name, s, "default"] for s in SEEDS])
        for name in sets
    }


def selection_passes(gains):
    """The selection rule on per-set seed gains: whether it passes, the mean
    gain, its standard error and the worst set's mean gain."""
    every = np.concatenate(list(gains.values()))
    mean = every.mean()
    error = every.std(ddof=1) / np.sqrt(len(every))
    worst = min(g.mean() for g in gains.values())
    return mean > 0 and mean > 2 * error and worst >= -0.02, mean, error, worst


def selection_table(runs, sets, variants):
    by = {(r["set"], r["seed"], r["variant"]): r for r in runs}
    lines = [
        "| set | rows fitted | conditions | targets | " + " | ".join(variants) + " |",
        "|---|---|---|---|" + "---|" * len(variants),
    ]
    for name in sets:
        base = np.array([by[name, s, "default"]["log_likelihood"] for s in SEEDS])
        cells = [f"{base.mean():.3f}"]
        for variant in variants[1:]:
            values = np.array([by[name, s, variant]["log_likelihood"] for s in SEEDS])
            gain = values - base
            cells.append(
                f"{values.mean():.3f} ({gain.mean():+.3f}, "
                f"{int((gain > 0).sum())}/{len(SEEDS)})"
            )
        first = by[name, SEEDS[0], "default"]
        lines.append(
            f"| {name} | {first['rows_fitted']:,} | {first['conditions']} | "
            f"{first['targets']} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "| variant | mean gain | standard error | worst set's gain | "
        "steps over default's (mean) | passes |",
        "|---|---|---|---|---|---|",
    ]
    for variant in variants[1:]:
        passes, mean, error, worst = selection_passes(seed_gains(runs, sets, variant))
        steps = np.mean(
            [
                by[n, s, variant]["n_iter"] / by[n, s, "default"]["n_iter"]
                for n in sets
                for s in SEEDS
            ]
        )
        lines.append(
            f"| {variant} | {mean:+.4f} | {error:.4f} | {worst:+.4f} | "
            f"{steps:.2f} | {'yes' if passes else 'no'} |"
        )
    return lines


def report(results):
    runs = results["runs"]
    selection = [r for r in runs if r["part"] == "select"]
    lines = [
        "# Smoother, shorter or slower conditional fits on small data (issue 22)",
        "",
        environment_line(results),
        "",
        "Test log p(y | x) (nats per row, higher is better), mean over seeds "
        f"{list(SEEDS)}; in brackets, the mean gain over the default and on "
        "how many seeds it is positive. The variants, sets and decision rules "
        "are in the study's docstring.",
        "",
        "Decision: the defaults stay (sigma 0.01, the full Fourier spread, "
        '`max_iter="auto"`\'s 2,000-step floor). No variant passes: the '
        "sigma rule, tuned for densities, loses on every set (likely because "
        "it blurs conditionals far narrower than y's spread), half the Fourier "
        "spread loses 0.09 nats on star98, the shorter schedules lose on "
        "macrodata on every seed, checks every 20 steps lose on every set "
        "and a quarter of the learning rate loses on star98 and macrodata. "
        "The first round stopped before its two 4,000-row sets, once star98 "
        "had settled it.",
        "",
        "## Selection",
        "",
        *selection_table(
            selection, list(dict.fromkeys(r["set"] for r in selection)), VARIANTS
        ),
    ]
    small = [r for r in runs if r["part"] in ("select", "schedule", "gentle")]
    lines += [
        "",
        "## Second round: shorter schedules",
        "",
        *selection_table(small, list(SHORT_SETS), ("default", *SHORT_VARIANTS)),
    ]
    if any(r["part"] == "gentle" for r in runs):
        lines += [
            "",
            "## Third round: checks before step 80, a lower learning rate",
            "",
            *selection_table(small, list(SHORT_SETS), ("default", *GENTLE_VARIANTS)),
        ]
    confirmation = [r for r in runs if r["part"] == "report"]
    if confirmation:
        sets = list(dict.fromkeys(r["set"] for r in confirmation))
        lines += [
            "",
            "## Confirmation on `conditional_density.py`'s sets",
            "",
            *selection_table(confirmation, sets, ("default", CONFIRMED)),
        ]
    return lines


def main():
    sharded_study(
        __spec__.name,
        __doc__.splitlines()[0],
        "conditional_smoothing",
        jobs=_jobs,
        run_one=_run,
        runs=RUNS,
        key=("part", "set", "seed"),
        report=report,
    )


if __name__ == "__main__":
    main()
