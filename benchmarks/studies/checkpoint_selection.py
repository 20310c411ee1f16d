"""Which held-out score picks the best checkpoint during training?

Early stopping scores the averaged weights about 25 times per fit on at
most 512 held-out rows, by 8 fixed rk4 steps (one Hutchinson probe above 3
features), and keeps the best. This script fits the default recipe on each
known-density set with a patience longer than the fit, so that every
checkpoint is kept, then records for every checkpoint:

- the log density of each held-out row, as the fit scores them;
- the log density of 2,048 fresh rows from the true density (8 rk4 steps,
  exact divergence): what a larger held-out split would give;
- the test KL(p || q) on fresh points (the truth the rules stand in for).

The report replays early stopping on those rows with each rule of
``RULES`` (keep the best, or the latest within k standard errors of it)
and gives the test KL of the checkpoint each keeps. A first pass of the
script, kept in ``results/checkpoint_selection_solvers.jsonl``, scored the
held-out rows by 8 and 16 rk4 steps and by dopri5 instead; the report
shows it too.

    python benchmarks/checkpoint_selection.py --shard 0/2 &
    python benchmarks/checkpoint_selection.py --shard 1/2
    python benchmarks/checkpoint_selection.py --report
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
from pathlib import Path

import numpy as np
import torch
from known_densities import KNOWN_DENSITIES

import skflow
from skflow import density as density_module
from skflow.ode import log_likelihood

RESULTS = Path(__file__).parent / "results"
# Per-row log densities, to 4 decimals (replays are unchanged by that),
# gzipped: about 1.4 MB for the eight runs.
RUNS = RESULTS / "checkpoint_selection_runs.jsonl.gz"
N_TRAIN = 10_000
# Test points per set; fewer in 10-D, where each costs 11 network passes
# per evaluation (paired across checkpoints, so differences stay precise).
N_TEST = {"10-D mixture": 2_000}
N_TEST_DEFAULT = 5_000
SEEDS = (0, 1)
N_EXTRA = 2_048


def _rounded(log_density):
    return [round(value, 4) for value in log_density.double().tolist()]


def _read_runs():
    with gzip.open(RUNS, "rt") as file:
        return [json.loads(line) for line in file]


def _recording(record):
    """Wrap skflow's validation score so that it keeps each checkpoint.

    skflow's validation calls ``log_likelihood`` (and nothing else in the
    fit does): wrapping it records the per-row log densities.
    """
    original_score = density_module._validation_log_likelihood
    original_log_likelihood = density_module.log_likelihood

    def log_likelihood_by_row(*args, **kwargs):
        log_density, stats = original_log_likelihood(*args, **kwargs)
        record["rows"].append(_rounded(log_density))
        return log_density, stats

    def capturing(z, weights, path, dequantize, generator):
        score = original_score(z, weights, path, dequantize, generator)
        record["path"] = path

        def recording(field):
            record["states"].append(copy.deepcopy(field.state_dict()))
            return score(field)

        return recording

    return capturing, log_likelihood_by_row


def run_one(set_name, seed):
    density = KNOWN_DENSITIES[set_name]
    X_train = density.sample(N_TRAIN, seed)
    X_test = density.sample(N_TEST.get(set_name, N_TEST_DEFAULT), 1000 + seed)
    # Fresh rows from the true density: what a larger held-out split
    # would score (they are not taken out of training here).
    X_extra = density.sample(N_EXTRA, 2000 + seed)
    record = {"states": [], "rows": []}
    saved = density_module._validation_log_likelihood, density_module.log_likelihood
    (
        density_module._validation_log_likelihood,
        density_module.log_likelihood,
    ) = _recording(record)
    try:
        # Patience longer than the fit: every checkpoint is scored.
        est = skflow.FlowMatchingDensity(random_state=seed, n_iter_no_change=10**9)
        est.fit(X_train)
    finally:
        (
            density_module._validation_log_likelihood,
            density_module.log_likelihood,
        ) = saved

    z_extra = torch.as_tensor((X_extra - est.mean_) / est.scale_, dtype=torch.float32)
    true_log_density = density.log_prob(X_test)
    extra_rows, test_kl = [], []
    for state in record["states"]:
        est.vector_field_.load_state_dict(state)
        log_density, _ = log_likelihood(
            est.vector_field_,
            z_extra,
            record["path"].log_base_density,
            solver="rk4",
            n_steps=density_module._VALIDATION_STEPS,
        )
        extra_rows.append(_rounded(log_density))
        test_kl.append(float(np.mean(true_log_density - est.score_samples(X_test))))
        print(set_name, seed, len(test_kl), f"{test_kl[-1]:.4f}", flush=True)
    return {
        "dataset": set_name,
        "seed": seed,
        "validation_every": density_module._validation_every(est.n_iter_),
        "held_out_rows": record["rows"],
        "extra_rows": extra_rows,
        "test_kl": test_kl,
    }


def chosen_checkpoint(rows, patience, tolerance):
    """The index early stopping keeps, replayed on per-row scores.

    ``rows[i]`` holds checkpoint i's log density of each held-out row. A
    checkpoint is kept if its mean is within ``tolerance`` standard errors
    (of its paired difference with the best so far) of the best mean; the
    latest kept one wins, and training stops after ``patience`` checks in a
    row that were not kept. tolerance 0 is "keep the best".
    """
    rows = np.asarray(rows)
    means = rows.mean(1)
    best, kept, waited = 0, 0, 0
    for index in range(len(rows)):
        if means[index] > means[best]:
            best = index
        allowed = 0.0
        if tolerance and index != best:
            difference = rows[best] - rows[index]
            allowed = tolerance * difference.std(ddof=1) / np.sqrt(len(difference))
        if means[best] - means[index] <= allowed:
            kept, waited = index, 0
        else:
            waited += 1
            if patience is not None and waited >= patience:
                break
    return kept


RULES = {
    "best of 512, patience 10": ("held_out_rows", 10, 0.0),
    "best of 512, all steps": ("held_out_rows", None, 0.0),
    "latest within 1 s.e., 512": ("held_out_rows", 10, 1.0),
    "latest within 2 s.e., 512": ("held_out_rows", 10, 2.0),
    "best of 2,048, patience 10": ("extra_rows", 10, 0.0),
    "latest within 1 s.e., 2,048": ("extra_rows", 10, 1.0),
}


FINDINGS = [
    "What it shows (skflow 0.3.0's fits; 0.3.1 differs only by the rounding "
    "of its fused Adam step):",
    "",
    "- **On the 2-D sets the model improves to the last step** (the "
    "learning rate decays to zero): on the checkerboard and two spirals "
    "every rule keeps the last checkpoint or one as good. On 8 Gaussians "
    "the 512 held-out rows are too few to see the last gains, and early "
    "stopping keeps checkpoints 0.004 and 0.007 nats worse than the last "
    "(seeds 0 and 1); that is most of the gap to the KDE there.",
    "- **In 10-D the model overfits** from about 40% of its steps: "
    "the last checkpoint is 0.065 to 0.085 nats worse than the best, and "
    "keeping the best matters.",
    "- **Keeping the latest checkpoint within 1 standard error** of the "
    "best fixes 8 Gaussians but drifts into overfitting in 10-D (seed 1: "
    "0.237 against 0.211); 2 standard errors drift further. Small data "
    "sets are where overfitting matters most, so skflow keeps the best.",
    "- **More held-out rows** (2,048, exact divergence) help a little "
    "everywhere (mean 0.0914 against 0.0941) but would take a fifth of "
    "10,000 rows out of training.",
    "- **The solver matters less than the number of rows.** In 2-D, 8 rk4 "
    "steps are biased by up to 0.003 (8 Gaussians) to 0.007 nats (two "
    "spirals), more for the later, sharper fields; 16 steps are within "
    "0.001 of dopri5. Scored by 16 steps or dopri5 instead (table above), "
    "2 of 5 choices change: on 8 Gaussians, seed 0, for the better by "
    "0.004 nats; on two spirals, for nothing. 16 steps would double the "
    "cost of the checks (about 7% more fit time) for a gain seen once.",
]


def _solver_lines():
    """Which checkpoint each solver's score keeps (a first pass, same fits)."""
    solvers = ("rk4-8", "rk4-16 exact", "dopri5 exact")
    lines = [
        "A first pass of this script scored each checkpoint's 512 held-out "
        "rows by three solvers (`checkpoint_selection_solvers.jsonl`): the "
        "checkpoint each keeps (patience 10) and its test KL:",
        "",
        "| set | seed | " + " | ".join(solvers) + " |",
        "|---" * (len(solvers) + 2) + "|",
    ]
    with (RESULTS / "checkpoint_selection_solvers.jsonl").open() as file:
        for run in map(json.loads, file):
            cells = []
            for solver in solvers:
                means = np.array(run[solver])[:, None]
                index = chosen_checkpoint(means, 10, 0.0)
                cells.append(f"{index + 1}: {run['test_kl'][index]:.4f}")
            lines.append(
                f"| {run['dataset']} | {run['seed']} | " + " | ".join(cells) + " |"
            )
    return lines


def report():
    runs = _read_runs()
    order = {name: i for i, name in enumerate(KNOWN_DENSITIES)}
    runs.sort(key=lambda run: (order[run["dataset"]], run["seed"]))
    columns = [*RULES, "last", "best (oracle)"]
    lines = [
        "# Which held-out score picks the checkpoint",
        "",
        "Test KL(p || q) in nats of the checkpoint each rule keeps (lower is "
        f"better): skflow's default recipe, {N_TRAIN:,} training rows, 25 "
        "checks per fit. Each rule is replayed on per-row log densities "
        "(8 rk4 steps): of the 512 held-out rows the fit used, or of "
        f"{N_EXTRA:,} fresh rows from the true density with the exact "
        "divergence (what a larger held-out split would give). 'Latest "
        "within k s.e.' keeps the latest checkpoint whose mean is within k "
        "standard errors (of the paired per-row difference) of the best, "
        "and stops after 10 checks in a row that are not. Regenerate with "
        "the commands in `benchmarks/checkpoint_selection.py`.",
        "",
        "| set | seed | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 2) + "|",
    ]
    cells_by_run = []
    for run in runs:
        kl = run["test_kl"]
        cells = [
            kl[chosen_checkpoint(run[rows], patience, tolerance)]
            for rows, patience, tolerance in RULES.values()
        ]
        cells_by_run.append([*cells, kl[-1], min(kl)])
        lines.append(
            f"| {run['dataset']} | {run['seed']} | "
            + " | ".join(f"{cell:.4f}" for cell in cells_by_run[-1])
            + " |"
        )
    means = np.mean(cells_by_run, axis=0)
    lines.append("| **mean** | | " + " | ".join(f"{m:.4f}" for m in means) + " |")
    lines += ["", *_solver_lines(), "", *FINDINGS]
    (RESULTS / "checkpoint_selection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shard", default="0/1")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        report()
        return
    index, count = map(int, args.shard.split("/"))
    torch.set_num_threads(1)
    done = set()
    if RUNS.exists():
        done = {(r["dataset"], r["seed"]) for r in _read_runs()}
    # The sets where the choice mattered most first; one 10-D run per shard.
    sets = ("8 gaussians", "10-D mixture", "two spirals", "checkerboard")
    jobs = [(name, seed) for name in sets for seed in SEEDS]
    for set_name, seed in jobs[index::count]:
        if (set_name, seed) in done:
            continue
        result = run_one(set_name, seed)
        with gzip.open(RUNS, "at") as file:
            file.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
