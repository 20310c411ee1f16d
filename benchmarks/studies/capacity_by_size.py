"""Should the network be smaller, or smoother, on small data?

The recipe's network (4 x 256 GELU on 128 random Fourier features of z,
frequency scale 4 in 2-D) was chosen on 10,000 rows
(``recipe_ablation.md``); on 200 rows it peaks within the first few
hundred steps and then overfits (``checkpoint_small_data.md``). Issue 21's
lever 2 asks whether capacity should follow the data's size. Three
changes, alone and together, each against ``now`` (the default recipe):

- ``3 x 128``: a smaller network;
- ``Fourier / 2``: random Fourier frequencies half as spread (a smoother
  field: fewer oscillations per unit of distance);
- ``3 x 128, Fourier / 2``: both.

Sets, sizes, seeds, metric and decision rule are those of
``steps_by_size.py``: 200, 500 and 1,000 rows of two spirals, moons and
the 10-D mixture, seeds 0-2, test KL on 1,000 fresh rows; a change wins if
its mean lead over ``now`` is more than twice its standard error and no
(set, size) mean of it is more than 5% above ``now``'s. ``now``'s fits are
those of ``steps_by_size.py`` (the same recipe, rows and seeds), read from
``results/steps_by_size.json``.

The winner is then confirmed, as a default, on a set that chose nothing:
half the spread on 1,000 rows or fewer, rising geometrically to the full
spread at 10,000 rows (where ``recipe_ablation.md`` found halving level),
fitted on ``density_quality.py``'s pinwheel at 200, 1,000 and 5,000 rows
and scored by its metric, against that benchmark's own default runs. Rule,
set before those runs: confirmed if the mean KL is lower at every size.

Run from the repository root after ``steps_by_size`` (about 35 min on two
cores):

    python -m benchmarks.studies.capacity_by_size --shard 0/2 &
    python -m benchmarks.studies.capacity_by_size --shard 1/2; wait
    python -m benchmarks.studies.capacity_by_size --write
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from benchmarks import density_quality
from benchmarks._common import RESULTS, sharded_study, with_recipe
from benchmarks.studies import steps_by_size
from skflow._recipe import Recipe

RUNS = Path("/tmp/capacity_by_size_runs.jsonl")
_SMALL = {"hidden_layer_sizes": (128, 128, 128)}
_SMOOTH = {"fourier_scale_factor": 0.5}
RULES = {
    "now": Recipe(),
    "3 x 128": dataclasses.replace(Recipe(), **_SMALL),
    "Fourier / 2": dataclasses.replace(Recipe(), **_SMOOTH),
    "3 x 128, Fourier / 2": dataclasses.replace(Recipe(), **_SMALL, **_SMOOTH),
}
# The confirmation on a set that chose nothing: the winner as a default,
# half the spread on 1,000 rows or fewer, rising geometrically to the full
# spread at 10,000 rows, on density_quality's pinwheel sweep.
RAMP = "Fourier / 2, rising to 1 at 10,000 rows"
REPORT_SET, REPORT_SIZES = "pinwheel", (200, 1_000, 5_000)


def ramp_factor(n_samples):
    """The Fourier spread's factor of ``RAMP`` on n_samples rows."""
    share = min(max(math.log10(n_samples / 1_000), 0.0), 1.0)
    return 0.5 ** (1.0 - share)


def _jobs():
    changed = [
        (rule, *job[1:])
        for job in steps_by_size._jobs()
        if job[0] == "now"
        for rule in RULES
        if rule != "now"
    ]
    report_set = [
        (RAMP, n, seed, REPORT_SET)
        for n in REPORT_SIZES
        for seed in steps_by_size.SEEDS
    ]
    return changed + report_set


def _run(rule, n_train, seed, name):
    if rule != RAMP:
        return steps_by_size.fit_and_score(RULES, rule, n_train, seed, name)
    recipe = dataclasses.replace(Recipe(), fourier_scale_factor=ramp_factor(n_train))
    factories = {rule: lambda: with_recipe(recipe)(random_state=seed)}
    (row,) = density_quality.known_density_run(name, n_train, seed, factories)
    return {"rule": rule, "n_train": n_train, "seed": seed, "set": name, **row}


def confirmation(runs, rule=RAMP, label="ramp", default="keeps the full spread"):
    """``rule`` (its column: ``label``) against the default on the report
    set, paired by seed; where not confirmed, the default ``default``."""
    before = json.loads((RESULTS / "density_quality.json").read_text())["runs"]
    lines = [
        "",
        f"## Confirmation on a set that chose nothing: {REPORT_SET}",
        "",
        f"`{rule}` as the default against the default (before: "
        "`density_quality.json`'s skflow runs, the same rows and seeds), by "
        "`density_quality.py`'s metric: test KL on 5,000 fresh rows, "
        "`score_samples`' own solver. Rule, set before the runs: confirmed if "
        "the mean KL is lower at every size.",
        "",
        f"| rows | before | {label} | change | seeds better |",
        "|---|---|---|---|---|",
    ]
    confirmed = True
    for n in REPORT_SIZES:
        pairs = []
        for seed in steps_by_size.SEEDS:
            old = [
                r["metric"]
                for r in before
                if (r["dataset"], r["n_train"], r["seed"], r.get("model"))
                == (REPORT_SET, n, seed, density_quality.SKFLOW)
            ]
            new = [
                r["metric"]
                for r in runs
                if (r["rule"], r["n_train"], r["seed"]) == (rule, n, seed)
            ]
            if old and new:
                pairs.append((old[0], new[0]))
        if not pairs:
            continue
        old, new = np.array(pairs).T
        change = new - old
        se = change.std(ddof=1) / np.sqrt(len(change)) if len(change) > 1 else np.nan
        confirmed &= bool(new.mean() < old.mean())
        lines.append(
            f"| {n:,} | {old.mean():.4f} | {new.mean():.4f} | "
            f"{change.mean():+.4f} ± {se:.4f} | {(change < 0).sum()} of {len(change)} |"
        )
    lines += [
        "",
        "Decision: "
        + (
            "confirmed."
            if confirmed
            else f"**not confirmed**: the default {default} at every size (the "
            "win on the selection sets does not carry over)."
        ),
    ]
    return lines


def report(results):
    steps_runs = json.loads((RESULTS / "steps_by_size.json").read_text())["runs"]
    now = [r for r in steps_runs if r["rule"] == "now"]
    runs = results["runs"]
    # The report's tables pick their runs by rule: the ramp's stay out.
    results["runs"] = now + runs
    title = "# A smaller or smoother network on small data (issue 21, lever 2)"
    lines = steps_by_size.small_data_report(results, RULES, title)
    return [*lines, *confirmation(runs)]


def main():
    sharded_study(
        __spec__.name,
        __doc__.splitlines()[0],
        "capacity_by_size",
        jobs=_jobs,
        run_one=_run,
        runs=RUNS,
        key=("rule", "n_train", "seed", "set"),
        report=report,
    )


if __name__ == "__main__":
    main()
