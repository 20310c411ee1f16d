"""Both Fourier spreads in one network, on small data (issue 21, lever 2).

``capacity_by_size.py`` found Fourier frequencies half as spread better on
200 to 1,000 rows of the selection sets, but worse on the pinwheel, whose
thin arms need the full spread; ``fourier_choice_by_size.py`` found that a
fit cannot tell the two apart from its own held-out rows at 200 rows. Here
the network gets both: half of its frequency columns at the full spread,
half at half of it (``mixed``; the same draw as the default's, the first
half of the columns scaled by 1/2), so a fit can lean on the smooth
features without losing the sharp ones.

Sets, sizes, seeds, metric and selection rule are ``capacity_by_size.py``'s
(200, 500 and 1,000 rows of two spirals, moons and the 10-D mixture, seeds
0-2, test KL on 1,000 fresh rows): ``mixed`` wins if its mean lead over
``now`` (``results/steps_by_size.json``'s fits) is more than twice its
standard error and no (set, size) mean of it is more than 5% above
``now``'s. ``Fourier / 2`` is read from ``results/capacity_by_size.json``
for comparison.

If it wins, it is confirmed as a default in the same way and by the same
rule, set before those runs: mixed on 1,000 rows or fewer, its low half
rising geometrically to the full spread at 10,000 rows
(``capacity_by_size.ramp_factor``), on ``density_quality.py``'s pinwheel
at 200, 1,000 and 5,000 rows against that benchmark's default runs;
confirmed if the mean KL is lower at every size.

Outcome (``results/fourier_mixture_by_size.md``): ``mixed`` passes the
selection rule, with a smaller lead than ``Fourier / 2``'s, and fails the
confirmation: on 200 pinwheel rows it is worse on every seed, level at
1,000 and 5,000. The default keeps the full spread.

Run from the repository root after ``capacity_by_size`` (about 25 min on
two cores, 15 more for the confirmation):

    python -m benchmarks.studies.fourier_mixture_by_size --shard 0/2 &
    python -m benchmarks.studies.fourier_mixture_by_size --shard 1/2; wait
    python -m benchmarks.studies.fourier_mixture_by_size --write
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from benchmarks import density_quality
from benchmarks._common import RESULTS, sharded_study, with_recipe
from benchmarks.studies import capacity_by_size, steps_by_size
from skflow import FlowMatchingDensity
from skflow._recipe import Recipe

RUNS = Path("/tmp/fourier_mixture_by_size_runs.jsonl")
MIXED = "mixed"
RAMP = "mixed, rising to 1 at 10,000 rows"
# Set from the selection runs, before the confirmation runs.
CONFIRM = True


@dataclasses.dataclass(frozen=True)
class _MixedRecipe(Recipe):
    """The recipe, with the first half of the frequency columns scaled."""

    low_factor: float = 0.5


class _MixedSpread(FlowMatchingDensity):
    """``FlowMatchingDensity`` whose first half of Fourier frequencies is
    scaled by its recipe's ``low_factor``."""

    def _build_field(self, n_features, hidden_layer_sizes, seed):
        field = super()._build_field(n_features, hidden_layer_sizes, seed)
        projection = field.fourier_features.projection
        with torch.no_grad():
            projection[:, : projection.shape[1] // 2] *= self._recipe.low_factor
        return field


RULES = {
    "now": Recipe(),
    "Fourier / 2": capacity_by_size.RULES["Fourier / 2"],
    MIXED: _MixedRecipe(),
}


def _jobs():
    selection = [
        (MIXED, n, seed, name)
        for n in steps_by_size.SIZES
        for seed in steps_by_size.SEEDS
        for name in steps_by_size.SET_NAMES
    ]
    if not CONFIRM:
        return selection
    return selection + [
        (RAMP, n, seed, capacity_by_size.REPORT_SET)
        for n in capacity_by_size.REPORT_SIZES
        for seed in steps_by_size.SEEDS
    ]


def _run(rule, n_train, seed, name):
    if rule == MIXED:
        return steps_by_size.fit_and_score(
            RULES, rule, n_train, seed, name, base=_MixedSpread
        )
    recipe = _MixedRecipe(low_factor=capacity_by_size.ramp_factor(n_train))
    factories = {rule: lambda: with_recipe(recipe, _MixedSpread)(random_state=seed)}
    (row,) = density_quality.known_density_run(name, n_train, seed, factories)
    return {"rule": rule, "n_train": n_train, "seed": seed, "set": name, **row}


def report(results):
    def runs_of(study, rule):
        runs = json.loads((RESULTS / f"{study}.json").read_text())["runs"]
        return [r for r in runs if r["rule"] == rule]

    runs = results["runs"]
    # The tables pick their runs by rule: the ramp's stay out.
    results["runs"] = (
        runs_of("steps_by_size", "now")
        + runs_of("capacity_by_size", "Fourier / 2")
        + runs
    )
    title = "# Both Fourier spreads in one network, on small data (issue 21)"
    lines = steps_by_size.small_data_report(results, RULES, title, candidate=MIXED)
    if any(r["rule"] == RAMP for r in runs):
        lines += capacity_by_size.confirmation(runs, RAMP)
    return lines


def main():
    sharded_study(
        __spec__.name,
        __doc__.splitlines()[0],
        "fourier_mixture_by_size",
        jobs=_jobs,
        run_one=_run,
        runs=RUNS,
        key=("rule", "n_train", "seed", "set"),
        report=report,
    )


if __name__ == "__main__":
    main()
