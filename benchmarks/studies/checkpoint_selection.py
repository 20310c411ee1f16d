"""Which held-out score picks the best checkpoint during training?

Early stopping scores the averaged weights on held-out rows a few times per
fit by a fixed-step rk4 solve, and keeps the best (how often, on how many
rows, by how many steps: the ``validation_*`` fields of
``skflow._recipe.Recipe``). This script fits the default recipe on each
known-density set with a patience longer than the fit, so that every
checkpoint is kept, then records for every checkpoint:

- the log density of each held-out row, as the fit scores them;
- the log density of 2,048 fresh rows from the true density (the same rk4
  steps, exact divergence): what a larger held-out split would give;
- the test KL(p || q) on fresh points (the truth the rules stand in for).

The report replays early stopping on those rows with each rule of
``RULES`` (keep the best, or the latest within k standard errors of it)
and gives the test KL of the checkpoint each keeps. A first pass of the
script, kept in ``results/checkpoint_selection_solvers.jsonl``, scored the
held-out rows by 8 and 16 rk4 steps and by dopri5 instead; the report
shows it too. Run from the repository root:

    python -m benchmarks.studies.checkpoint_selection --shard 0/2 &
    python -m benchmarks.studies.checkpoint_selection --shard 1/2; wait
    python -m benchmarks.studies.checkpoint_selection --report
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from benchmarks._common import RESULTS, read_runs, run_shard, shard, write_markdown
from benchmarks.known_densities import KNOWN_DENSITIES
from skflow import FlowMatchingDensity
from skflow._early_stopping import HeldOutScore
from skflow._ode import log_likelihood

# Per-row log densities, to 4 decimals (replays are unchanged by that),
# gzipped.
RUNS = RESULTS / "checkpoint_selection_runs.jsonl.gz"
SOLVER_RUNS = RESULTS / "checkpoint_selection_solvers.jsonl"
N_TRAIN = 10_000
# Test points per set; fewer in 10-D, where each costs 11 network passes
# per evaluation (paired across checkpoints, so differences stay precise).
N_TEST = {"10-D mixture": 2_000}
N_TEST_DEFAULT = 5_000
SEEDS = (0, 1)
N_EXTRA = 2_048


def _rounded(log_density):
    return [round(value, 4) for value in log_density.double().tolist()]


class _RecordedScore:
    """A held-out score that keeps each checkpoint it scores: the weights,
    and the log density of each held-out row."""

    def __init__(self, score: HeldOutScore) -> None:
        self.score = score
        self.states: list[dict] = []
        self.rows: list[list[float]] = []

    def __getattr__(self, name):
        # The rest of the held-out score's interface, as it is (the guard
        # keeps copies, which look attributes up before __init__, finite).
        if name == "score":
            raise AttributeError(name)
        return getattr(self.score, name)

    def __call__(self, field: torch.nn.Module) -> float:
        log_density = self.score.log_densities(field)
        self.states.append(copy.deepcopy(field.state_dict()))
        self.rows.append(_rounded(log_density))
        # The weighted mean, as HeldOutScore returns it.
        return float(self.score.weights @ log_density)


class _Recording(FlowMatchingDensity):
    """The estimator, keeping in ``recorded_`` what early stopping scored."""

    def _held_out_score(self, *args):
        self.recorded_ = _RecordedScore(super()._held_out_score(*args))
        return self.recorded_


def run_one(set_name, seed):
    density = KNOWN_DENSITIES[set_name]
    X_train = density.sample(N_TRAIN, seed)
    X_test = density.sample(N_TEST.get(set_name, N_TEST_DEFAULT), 1000 + seed)
    # Fresh rows from the true density: what a larger held-out split
    # would score (they are not taken out of training here).
    X_extra = density.sample(N_EXTRA, 2000 + seed)
    # Patience longer than the fit: every checkpoint is scored.
    est = _Recording(random_state=seed, n_iter_no_change=10**9).fit(X_train)

    z_extra = torch.as_tensor((X_extra - est.mean_) / est.scale_, dtype=torch.float32)
    true_log_density = density.log_prob(X_test)
    extra_rows, test_kl = [], []
    for state in est.recorded_.states:
        est.vector_field_.load_state_dict(state)
        log_density, _ = log_likelihood(
            est.vector_field_,
            z_extra,
            est.path_.log_base_density,
            solver="rk4",
            n_steps=est._recipe.validation_steps,
        )
        extra_rows.append(_rounded(log_density))
        test_kl.append(float(np.mean(true_log_density - est.score_samples(X_test))))
        print(set_name, seed, len(test_kl), f"{test_kl[-1]:.4f}", flush=True)
    return {
        "dataset": set_name,
        "seed": seed,
        "validation_every": est._recipe.validation_every(est.n_iter_),
        "held_out_rows": est.recorded_.rows,
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


SOLVERS = ("rk4-8", "rk4-16 exact", "dopri5 exact")


def _solver_choices(run):
    """The checkpoint each solver's score keeps (patience 10)."""
    return [
        chosen_checkpoint(np.array(run[solver])[:, None], 10, 0.0) for solver in SOLVERS
    ]


def _solver_lines(solver_runs):
    """Which checkpoint each solver's score keeps (a first pass, same fits)."""
    lines = [
        f"A first pass of this script scored each checkpoint's held-out "
        f"rows by {len(SOLVERS)} solvers (`{SOLVER_RUNS.name}`): the "
        "checkpoint each keeps (patience 10) and its test KL:",
        "",
        "| set | seed | " + " | ".join(SOLVERS) + " |",
        "|---" * (len(SOLVERS) + 2) + "|",
    ]
    for run in solver_runs:
        cells = [
            f"{index + 1}: {run['test_kl'][index]:.4f}"
            for index in _solver_choices(run)
        ]
        lines.append(
            f"| {run['dataset']} | {run['seed']} | " + " | ".join(cells) + " |"
        )
    return lines


def _measured_lines(runs, solver_runs):
    """What the tables say, computed from them."""
    lines = ["Computed from the runs:", ""]
    for name in dict.fromkeys(run["dataset"] for run in runs):
        mine = [run for run in runs if run["dataset"] == name]
        kls = [np.array(run["test_kl"]) for run in mine]
        seeds = " / ".join(str(run["seed"]) for run in mine)
        best = " / ".join(str(kl.argmin() + 1) for kl in kls)
        worse = " / ".join(f"{kl[-1] - kl.min():.4f}" for kl in kls)
        lines.append(
            f"- {name} (seeds {seeds}): the best "
            f"checkpoint is check {best} of {len(kls[0])}; the last one is "
            f"{worse} nats worse than it."
        )
    biases = [
        f"{run['dataset']}, seed {run['seed']}: "
        + ", ".join(
            f"{solver} {np.abs(np.subtract(run[solver], run[SOLVERS[-1]])).max():.4f}"
            for solver in SOLVERS[:-1]
        )
        for run in solver_runs
    ]
    changed = sum(len(set(_solver_choices(run))) > 1 for run in solver_runs)
    lines += [
        f"- Largest difference of a checkpoint's held-out score from "
        f"{SOLVERS[-1]}'s (nats): " + "; ".join(biases) + ".",
        f"- The checkpoint kept depends on the solver in {changed} of "
        f"{len(solver_runs)} fits.",
    ]
    return lines


def report():
    runs = read_runs(RUNS)
    solver_runs = read_runs(SOLVER_RUNS)
    order = {name: i for i, name in enumerate(KNOWN_DENSITIES)}
    runs.sort(key=lambda run: (order[run["dataset"]], run["seed"]))
    columns = [*RULES, "last", "best (oracle)"]
    lines = [
        "# Which held-out score picks the checkpoint",
        "",
        "Test KL(p || q) in nats of the checkpoint each rule keeps (lower is "
        f"better): skflow's default recipe, {N_TRAIN:,} training rows, "
        f"{len(runs[0]['test_kl'])} checks per fit. Each rule is replayed on "
        f"per-row log densities ({FlowMatchingDensity._recipe.validation_steps} "
        f"rk4 steps): of the {len(runs[0]['held_out_rows'][0])} held-out rows "
        f"the fit used, or of {N_EXTRA:,} fresh rows from the true density "
        "with the exact divergence (what a larger held-out split would give). "
        "'Latest within k s.e.' keeps the latest checkpoint whose mean is "
        "within k standard errors (of the paired per-row difference) of the "
        "best, and stops after 10 checks in a row that are not. Regenerate "
        "with the commands in `benchmarks/studies/checkpoint_selection.py`.",
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
    lines += [
        "",
        *_solver_lines(solver_runs),
        "",
        *_measured_lines(runs, solver_runs),
    ]
    write_markdown("checkpoint_selection", lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shard", type=shard, default="0/1")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        report()
        return
    # The sets where the choice mattered most first; one 10-D run per shard.
    sets = ("8 gaussians", "10-D mixture", "two spirals", "checkerboard")
    jobs = [(name, seed) for name in sets for seed in SEEDS]
    run_shard(jobs, args.shard, run_one, RUNS, key=("dataset", "seed"))


if __name__ == "__main__":
    main()
