"""Is early stopping's checkpoint choice reliable on small data?

Early stopping holds out 10% of the rows (at most 512) and keeps the
checkpoint that scores best on them. On 200 rows that is 20 rows, on
1,000 rows 100: ``checkpoint_selection.py`` measured the choice on 10,000
rows only. Here the default recipe is fitted on 200 and 1,000 rows of
three sets kept for choosing (two spirals, moons, the 10-D mixture), seeds
0, 1, 2, with a patience longer than the fit so that every checkpoint is
scored, and each checkpoint gets:

- the log density of each held-out row, as the fit scores them;
- the log density of 2,048 fresh rows from the true density (the same rk4
  steps, exact divergence): what a held-out split as large as the
  10,000-row fits' would see;
- its test KL(p || q) on 1,000 fresh rows (rk4, 16 steps, exact
  divergence: within 0.001 nats of dopri5 in ``checkpoint_selection.md``).

The report replays early stopping (keep the best, patience 10) on the
held-out rows and on the fresh ones, and gives the test KL of the
checkpoint each keeps, of the last and of the best (oracle). Decision rule,
set before the runs: the choice is reliable at a size if keeping the best
of the held-out rows loses at most 0.01 nats on average (over sets and
seeds) against keeping the best of the 2,048 fresh rows; where it loses
more, the held-out split is too small there.

Run from the repository root (about 30 min on two cores):

    python -m benchmarks.studies.checkpoint_small_data --shard 0/2 &
    python -m benchmarks.studies.checkpoint_small_data --shard 1/2; wait
    python -m benchmarks.studies.checkpoint_small_data --write
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks._common import environment_line, sharded_study
from benchmarks.known_densities import CURVED_DENSITIES, KNOWN_DENSITIES
from benchmarks.studies.checkpoint_selection import (
    _Recording,
    _rounded,
    chosen_checkpoint,
)
from skflow._ode import log_likelihood
from skflow._recipe import Recipe

RUNS = Path("/tmp/checkpoint_small_data_runs.jsonl")
SETS = {**KNOWN_DENSITIES, **CURVED_DENSITIES}
SET_NAMES = ("two spirals", "moons", "10-D mixture")
SIZES = (200, 1_000)
SEEDS = (0, 1, 2)
N_TEST, N_EXTRA, TEST_STEPS = 1_000, 2_048, 16
PATIENCE = 10
MAX_LOSS = 0.01


def _jobs():
    return [(n, seed, name) for n in SIZES for seed in SEEDS for name in SET_NAMES]


def _log_densities(est, z, n_steps):
    log_density, _ = log_likelihood(
        est.vector_field_,
        z,
        est.path_.log_base_density,
        solver="rk4",
        n_steps=n_steps,
    )
    return log_density


def _run(n_train, seed, name):
    density = SETS[name]
    X_train = density.sample(n_train, seed)
    X_test = density.sample(N_TEST, 1000 + seed)
    X_extra = density.sample(N_EXTRA, 2000 + seed)
    est = _Recording(random_state=seed, n_iter_no_change=10**9).fit(X_train)

    def standardized(X):
        return torch.as_tensor((X - est.mean_) / est.scale_, dtype=torch.float32)

    z_test, z_extra = standardized(X_test), standardized(X_extra)
    log_scale = float(np.log(est.scale_).sum())
    log_p = density.log_prob(X_test)
    extra_rows, test_kl = [], []
    for state in est.recorded_.states:
        est.vector_field_.load_state_dict(state)
        steps = est._recipe.validation_steps
        extra_rows.append(_rounded(_log_densities(est, z_extra, steps)))
        log_q = _log_densities(est, z_test, TEST_STEPS).double().numpy() - log_scale
        test_kl.append(float(np.mean(log_p - log_q)))
    print(f"{name}, {n_train} rows, seed {seed}: done", flush=True)
    # Keeping the best needs each checkpoint's mean only.
    return {
        "n_train": n_train,
        "seed": seed,
        "set": name,
        "n_held_out": len(est.recorded_.rows[0]),
        "held_out_means": np.mean(est.recorded_.rows, axis=1).tolist(),
        "extra_means": np.mean(extra_rows, axis=1).tolist(),
        "test_kl": test_kl,
    }


def _column(means):
    """Per-checkpoint means as the one-row scores ``chosen_checkpoint`` takes."""
    return np.asarray(means)[:, None]


def report(results):
    runs = results["runs"]
    lines = [
        "# Early stopping's checkpoint on small data (issue 21)",
        "",
        environment_line(results),
        "",
        f"Test KL(p || q) in nats (lower is better; {N_TEST:,} fresh rows, "
        f"rk4 {TEST_STEPS} steps) of the checkpoint each rule keeps, the "
        f"default recipe on {' and '.join(f'{n:,}' for n in SIZES)} rows; "
        f"mean over seeds {SEEDS[0]}-{SEEDS[-1]}. Held-out: the fit's own "
        f"split (10% of the rows), best kept, patience {PATIENCE}: what "
        f"skflow does. Fresh: the same rule on {N_EXTRA:,} rows of the true "
        'density. Steps: the fit\'s (`max_iter="auto"`); step kept: the mean '
        "step of the checkpoint each keeps. The sets and the decision rule are "
        "in the study's docstring.",
        "",
        "| rows | set | held-out rows | held-out (skflow) | fresh | last | "
        "best (oracle) | steps | step kept: held-out / oracle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    losses = {}
    for n in SIZES:
        for name in SET_NAMES:
            mine = [r for r in runs if (r["n_train"], r["set"]) == (n, name)]
            if not mine:
                continue
            max_iter = Recipe().max_iter(n)
            every = Recipe().validation_every(max_iter)
            cells, kept_steps = [], []
            for r in mine:
                kl = np.array(r["test_kl"])
                held = chosen_checkpoint(_column(r["held_out_means"]), PATIENCE, 0)
                fresh = chosen_checkpoint(_column(r["extra_means"]), PATIENCE, 0)
                cells.append((kl[held], kl[fresh], kl[-1], kl.min()))
                kept_steps.append((every * (held + 1), every * (kl.argmin() + 1)))
                losses.setdefault(n, []).append(kl[held] - kl[fresh])
            means = np.mean(cells, axis=0)
            steps = " / ".join(f"{m:,.0f}" for m in np.mean(kept_steps, axis=0))
            lines.append(
                f"| {n:,} | {name} | {mine[0]['n_held_out']} | "
                + " | ".join(f"{m:.4f}" for m in means)
                + f" | {max_iter:,} | {steps} |"
            )
    lines += ["", "Decision:", ""]
    for n, loss in losses.items():
        loss = np.array(loss)
        verdict = "reliable" if loss.mean() <= MAX_LOSS else "**not reliable**"
        lines.append(
            f"- {n:,} rows: the held-out choice loses {loss.mean():+.4f} ± "
            f"{loss.std(ddof=1) / np.sqrt(len(loss)):.4f} nats against the "
            f"fresh rows' ({len(loss)} fits; worst {loss.max():+.4f}): "
            f"{verdict} (rule: at most {MAX_LOSS})."
        )
    return lines


def main():
    sharded_study(
        __spec__.name,
        __doc__.splitlines()[0],
        "checkpoint_small_data",
        jobs=_jobs,
        run_one=_run,
        runs=RUNS,
        key=("n_train", "seed", "set"),
        report=report,
    )


if __name__ == "__main__":
    main()
