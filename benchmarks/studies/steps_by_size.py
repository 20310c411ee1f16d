"""How many steps should ``max_iter="auto"`` take on small data?

``max_iter="auto"`` takes 70 steps per square root of the rows, but never
fewer than 2,000, with a held-out check at least every 80 steps.
``checkpoint_small_data.md`` found that on 200 rows the model peaks at 160
to 480 of its 2,000 steps (the last checkpoint 0.3 to 24 nats worse) and
that the 20 held-out rows pick among few checkpoints before the peak. A
shorter fit decays its learning rate and settles its moving average of the
weights near the peak instead of after it. Four rules for the steps (issue
21's lever 2), all with early stopping as it is:

- ``now``: 70 sqrt(n), at least 2,000; checks at least 80 steps apart;
- ``sqrt``: 70 sqrt(n), at least 200; checks at least 20 steps apart;
- ``2 per row``: as ``sqrt`` but at most 2 steps per row;
- ``1 per row``: as ``sqrt`` but at most 1 step per row.

A step draws 512 rows, so 2 steps per row is about 1,000 passes over the
data. At 10,000 rows and above every rule takes the same steps as ``now``
(the caps bind below 1,225 and 4,900 rows), so only small fits change.

Fitted on 200, 500 and 1,000 rows of three sets kept for choosing (two
spirals, moons, the 10-D mixture), seeds 0, 1, 2; scored by test KL(p || q)
on 1,000 fresh rows (rk4, 16 steps, exact divergence, as
``checkpoint_small_data.py``).

Decision rule, set before the runs: the rule with the lowest mean KL over
the 27 fits replaces ``now`` if its mean lead over ``now`` (paired by set,
size and seed) is more than twice its standard error and no (set, size)
mean of it is more than 5% above ``now``'s; otherwise ``now`` stays. It is
then confirmed on sets that chose nothing: the pinwheel at 200 and 1,000
rows of ``density_quality.py`` and the anomaly sets of
``anomaly_detection.py``.

Run from the repository root (about 30 min on two cores):

    python -m benchmarks.studies.steps_by_size --shard 0/2 &
    python -m benchmarks.studies.steps_by_size --shard 1/2; wait
    python -m benchmarks.studies.steps_by_size --write
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import environment_line, sharded_study, with_recipe
from benchmarks.known_densities import CURVED_DENSITIES, KNOWN_DENSITIES
from skflow import FlowMatchingDensity
from skflow._ode import log_likelihood
from skflow._recipe import Recipe

RUNS = Path("/tmp/steps_by_size_runs.jsonl")
SETS = {**KNOWN_DENSITIES, **CURVED_DENSITIES}
SET_NAMES = ("two spirals", "moons", "10-D mixture")
SIZES = (200, 500, 1_000)
SEEDS = (0, 1, 2)
N_TEST, TEST_STEPS = 1_000, 16
MAX_WORSE = 0.05


@dataclasses.dataclass(frozen=True)
class _CappedRecipe(Recipe):
    """The recipe with at most ``steps_per_row`` steps per row."""

    steps_per_row: float = math.inf

    def max_iter(self, n_samples: int) -> int:
        steps = min(super().max_iter(n_samples), self.steps_per_row * n_samples)
        return int(max(steps, self.auto_steps_min))


_SHORT = {"auto_steps_min": 200, "validation_min_steps_between": 20}
RULES = {
    "now": _CappedRecipe(),
    "sqrt": _CappedRecipe(**_SHORT),
    "2 per row": _CappedRecipe(**_SHORT, steps_per_row=2.0),
    "1 per row": _CappedRecipe(**_SHORT, steps_per_row=1.0),
}


def _jobs():
    return [
        (rule, n, seed, name)
        for n in SIZES
        for seed in SEEDS
        for name in SET_NAMES
        for rule in RULES
    ]


def _run(rule, n_train, seed, name):
    return fit_and_score(RULES, rule, n_train, seed, name)


def fit_and_score(rules, rule, n_train, seed, name, base=FlowMatchingDensity):
    """The default fit of ``base`` with ``rules[rule]`` for its recipe, on
    ``n_train`` rows of set ``name``: its test KL, steps, seconds and best
    held-out score (mean log density of the held-out rows, standardized
    units)."""
    density = SETS[name]
    X_train = density.sample(n_train, seed)
    X_test = density.sample(N_TEST, 1000 + seed)
    estimator = with_recipe(rules[rule], base)
    start = time.perf_counter()
    est = estimator(random_state=seed).fit(X_train)
    seconds = time.perf_counter() - start
    z_test = torch.as_tensor((X_test - est.mean_) / est.scale_, dtype=torch.float32)
    log_q, _ = log_likelihood(
        est.vector_field_,
        z_test,
        est.path_.log_base_density,
        solver="rk4",
        n_steps=TEST_STEPS,
    )
    log_q = log_q.double().numpy() - float(np.log(est.scale_).sum())
    kl = float(np.mean(density.log_prob(X_test) - log_q))
    max_iter = rules[rule].max_iter(n_train)
    every = rules[rule].validation_every(max_iter)
    kept = every * (int(np.argmax(est.validation_scores_)) + 1)
    print(f"{rule}, {name}, {n_train} rows, seed {seed}: KL {kl:.4f}", flush=True)
    return {
        "rule": rule,
        "n_train": n_train,
        "seed": seed,
        "set": name,
        "test_kl": kl,
        "max_iter": max_iter,
        "n_iter": est.n_iter_,
        "step_kept": min(kept, max_iter),
        "seconds": seconds,
        "held_out": float(np.max(est.validation_scores_)),
    }


def _kl(runs, rule, n=None, name=None):
    """KL of ``rule``'s fits in (size, set, seed) order."""
    mine = [
        r
        for r in runs
        if r["rule"] == rule
        and (n is None or r["n_train"] == n)
        and (name is None or r["set"] == name)
    ]
    mine.sort(key=lambda r: (r["n_train"], r["set"], r["seed"]))
    return np.array([r["test_kl"] for r in mine]), mine


def report(results):
    title = '# Steps of `max_iter="auto"` on small data (issue 21, lever 2)'
    return small_data_report(results, RULES, title)


def small_data_report(results, rules, title, candidate=None):
    """The report of a study of ``rules`` (``now`` first) on the small sets;
    the decision is about ``candidate``, or where None, the rule of lowest
    mean KL."""
    runs = results["runs"]
    lines = [
        title,
        "",
        environment_line(results),
        "",
        f"Test KL(p || q) in nats (lower is better; {N_TEST:,} fresh rows, rk4 "
        f"{TEST_STEPS} steps), mean over seeds {SEEDS[0]}-{SEEDS[-1]}, of the "
        "default fit with each rule (the rules, the sets and the "
        "decision rule are in the study's docstring). Steps: the rule's "
        "`max_iter` / steps taken (early stopping) / step of the checkpoint "
        "kept, means over seeds; s: fit seconds (one thread, two shards).",
        "",
        "| rows | set | " + " | ".join(rules) + " |",
        "|---|---|" + "---|" * len(rules),
    ]
    for n in SIZES:
        for name in SET_NAMES:
            cells = []
            for rule in rules:
                kl, mine = _kl(runs, rule, n, name)
                if not len(kl):
                    cells.append("-")
                    continue
                steps = "/".join(
                    f"{np.mean([r[k] for r in mine]):,.0f}"
                    for k in ("max_iter", "n_iter", "step_kept")
                )
                secs = np.mean([r["seconds"] for r in mine])
                cells.append(f"{kl.mean():.4f} ({steps}; {secs:.0f} s)")
            lines.append(f"| {n:,} | {name} | " + " | ".join(cells) + " |")
    now, _ = _kl(runs, "now")
    lines += ["", "Against `now`, paired by set, size and seed:", ""]
    means = {}
    for rule in rules:
        kl, _ = _kl(runs, rule)
        if rule == "now" or len(kl) != len(now) or not len(kl):
            continue
        lead = now - kl
        means[rule] = kl.mean()
        worse = [
            f"{name} at {n:,}"
            for n in SIZES
            for name in SET_NAMES
            if _kl(runs, rule, n, name)[0].mean()
            > (1 + MAX_WORSE) * _kl(runs, "now", n, name)[0].mean()
        ]
        lines.append(
            f"- `{rule}`: mean KL {kl.mean():.4f} against {now.mean():.4f}, "
            f"lead {lead.mean():+.4f} ± {lead.std(ddof=1) / np.sqrt(len(lead)):.4f} "
            f"({(lead > 0).sum()} of {len(lead)} fits ahead); more than "
            f"{MAX_WORSE:.0%} above `now` in: {', '.join(worse) or 'none'}."
        )
    if means:
        best = candidate or min(means, key=means.get)
        kl, _ = _kl(runs, best)
        lead = now - kl
        se = lead.std(ddof=1) / np.sqrt(len(lead))
        worse = any(
            _kl(runs, best, n, name)[0].mean()
            > (1 + MAX_WORSE) * _kl(runs, "now", n, name)[0].mean()
            for n in SIZES
            for name in SET_NAMES
        )
        adopt = lead.mean() > 2 * se and not worse
        lines += [
            "",
            (
                f"Decision about `{best}`, the rule this study tests: "
                if candidate
                else f"Decision: the lowest mean KL is `{best}`'s; "
            )
            + (
                f"it wins on these sets (lead more than twice its s.e., no "
                f"cell more than {MAX_WORSE:.0%} worse)."
                if adopt
                else "`now` stays (the rule's conditions are not met)."
            ),
        ]
    return lines


def main():
    sharded_study(
        __spec__.name,
        __doc__.splitlines()[0],
        "steps_by_size",
        jobs=_jobs,
        run_one=_run,
        runs=RUNS,
        key=("rule", "n_train", "seed", "set"),
        report=report,
    )


if __name__ == "__main__":
    main()
