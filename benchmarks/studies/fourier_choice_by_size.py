"""Can a fit choose its Fourier spread on its own held-out rows?

``capacity_by_size.md`` found random Fourier frequencies half as spread
better on every fit of 200 to 1,000 rows of two spirals, moons and the
10-D mixture, and worse on the pinwheel (a set that chose nothing), whose
thin arms need the full spread. A fixed rule by size cannot serve both; a
fit could train both spreads and keep the one whose best checkpoint scores
higher on the held-out rows (the same rows for both: one seed draws them),
the way issue 21's lever 3 would choose a smoothing. This study measures
that choice before anything is built: both spreads (``full``, the default,
and ``half``) fitted on 200 and 1,000 rows of the three selection sets and
of the pinwheel, seeds 0-2, each scored by test KL (as ``steps_by_size.py``:
1,000 fresh rows, rk4 16 steps) and by its best held-out score; the report
replays the choice and gives the oracle (the better test KL of the two).

Decision rule, set before the runs: choosing by held-out rows is worth
building if on the selection sets its mean KL is below ``full``'s by more
than twice the standard error of the paired difference, and on the
pinwheel its mean KL is not above ``full``'s at either size.

Run from the repository root (about 25 min on two cores):

    python -m benchmarks.studies.fourier_choice_by_size --shard 0/2 &
    python -m benchmarks.studies.fourier_choice_by_size --shard 1/2; wait
    python -m benchmarks.studies.fourier_choice_by_size --write
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from benchmarks._common import environment_line, sharded_study
from benchmarks.studies import steps_by_size
from skflow._recipe import Recipe

RUNS = Path("/tmp/fourier_choice_by_size_runs.jsonl")
RULES = {
    "full": Recipe(),
    "half": dataclasses.replace(Recipe(), fourier_scale_factor=0.5),
}
SELECTION = steps_by_size.SET_NAMES
REPORT = ("pinwheel",)
SIZES = (200, 1_000)
SEEDS = steps_by_size.SEEDS


def _jobs():
    return [
        (rule, n, seed, name)
        for n in SIZES
        for seed in SEEDS
        for name in SELECTION + REPORT
        for rule in RULES
    ]


def _run(rule, n_train, seed, name):
    return steps_by_size.fit_and_score(RULES, rule, n_train, seed, name)


def _fits(runs, names):
    """(set, rows, full KL, half KL, choice's KL, half chosen) per fit of
    ``names``, a fit being a (set, rows, seed)."""
    by_job = {}
    for r in runs:
        by_job.setdefault((r["set"], r["n_train"], r["seed"]), {})[r["rule"]] = r
    rows = []
    for (name, n, _seed), pair in sorted(by_job.items()):
        if name not in names or len(pair) < 2:
            continue
        full, half = pair["full"], pair["half"]
        picks_half = half["held_out"] > full["held_out"]
        chosen = half if picks_half else full
        kls = full["test_kl"], half["test_kl"], chosen["test_kl"]
        rows.append((name, n, *kls, picks_half))
    return rows


def _summary(rows):
    kl = np.array([r[2:5] for r in rows])
    gain = kl[:, 0] - kl[:, 2]
    se = gain.std(ddof=1) / np.sqrt(len(gain))
    return kl.mean(0), np.minimum(kl[:, 0], kl[:, 1]).mean(), gain.mean(), se


def report(results):
    runs = results["runs"]
    lines = [
        "# Choosing the Fourier spread on held-out rows (issue 21, lever 2)",
        "",
        environment_line(results),
        "",
        "Test KL(p || q) in nats (lower is better; 1,000 fresh rows, rk4 16 "
        "steps), mean over seeds 0-2. full: the default spread; half: "
        "frequencies half as spread; chosen: the one whose best checkpoint "
        "scores higher on the fit's held-out rows; oracle: the better test "
        "KL. The sets and the decision rule are in the study's docstring.",
        "",
        "| rows | set | group | full | half | chosen | half chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in SIZES:
        for name in SELECTION + REPORT:
            mine = [r for r in _fits(runs, (name,)) if r[1] == n]
            if not mine:
                continue
            kl = np.array([r[2:5] for r in mine])
            picks = sum(r[5] for r in mine)
            group = "report" if name in REPORT else "selection"
            lines.append(
                f"| {n:,} | {name} | {group} | "
                + " | ".join(f"{m:.4f}" for m in kl.mean(0))
                + f" | {picks} of {len(mine)} |"
            )
    lines += ["", "Against `full`, paired by set, size and seed:", ""]
    verdicts = []
    for group, names in (("selection", SELECTION), ("report", REPORT)):
        rows = _fits(runs, names)
        if len(rows) < 2:
            continue
        means, oracle, gain, se = _summary(rows)
        lines.append(
            f"- {group} sets ({len(rows)} fits): full {means[0]:.4f}, half "
            f"{means[1]:.4f}, chosen {means[2]:.4f} (oracle {oracle:.4f}); "
            f"the choice gains {gain:+.4f} ± {se:.4f} nats over full."
        )
        if group == "selection":
            verdicts.append(gain > 2 * se)
        else:
            for n in SIZES:
                sized = [r for r in rows if r[1] == n]
                if sized:
                    kl = np.array([r[2:5] for r in sized])
                    verdicts.append(kl[:, 2].mean() <= kl[:, 0].mean())
    if verdicts:
        worth = all(verdicts)
        lines += [
            "",
            "Decision: choosing by held-out rows is "
            + ("worth building." if worth else "**not** worth building as measured.")
            + " (Rule: in the docstring.)",
        ]
    return lines


def main():
    sharded_study(
        __spec__.name,
        __doc__.splitlines()[0],
        "fourier_choice_by_size",
        jobs=_jobs,
        run_one=_run,
        runs=RUNS,
        key=("rule", "n_train", "seed", "set"),
        report=report,
    )


if __name__ == "__main__":
    main()
