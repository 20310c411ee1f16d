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
``results/steps_by_size.json``. A winner applies below the smallest size
where it stops winning, and is then confirmed on sets that chose nothing.

Run from the repository root after ``steps_by_size`` (about 30 min on two
cores):

    python -m benchmarks.studies.capacity_by_size --shard 0/2 &
    python -m benchmarks.studies.capacity_by_size --shard 1/2; wait
    python -m benchmarks.studies.capacity_by_size --write
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from benchmarks._common import RESULTS, sharded_study
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


def _jobs():
    return [
        (rule, *job[1:])
        for job in steps_by_size._jobs()
        if job[0] == "now"
        for rule in RULES
        if rule != "now"
    ]


def _run(rule, n_train, seed, name):
    return steps_by_size.fit_and_score(RULES, rule, n_train, seed, name)


def report(results):
    steps_runs = json.loads((RESULTS / "steps_by_size.json").read_text())["runs"]
    now = [r for r in steps_runs if r["rule"] == "now"]
    results["runs"] = now + results["runs"]
    title = "# A smaller or smoother network on small data (issue 21, lever 2)"
    return steps_by_size.small_data_report(results, RULES, title)


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
