"""Mixtures of fields for small unconditional fits: a study (issue 21).

Small conditional fits became the mixture of two refits
(``results/refit_members.md``). ``FlowMatchingDensity`` keeps early
stopping's checkpoint: a refit of the initial weights alone, stopped at the
step the checkpoint chose for another run, made 200 pinwheel rows worse on
every seed (``results/refit_small_data.md``). This study asks whether a
mixture helps the density, in two forms, each scored from the same fit:

- ``refit pair``: what the conditional estimator does, the mixture of the
  refit from the initial weights and a refit from new ones, both on every
  row up to the step kept;
- ``checkpoint pair``: the mixture of early stopping's checkpoint (the
  model today, whose step was chosen for it) and a refit from new weights
  up to the same step.

Each job fits once (first training, then both refits), and scores the
checkpoint (``default``), each refit and the two mixtures by the test KL
of ``steps_by_size.py`` (1,000 fresh rows, 16 RK4 steps). The default's
KL reproduces ``results/steps_by_size.json``'s ``now`` runs.

Sets. Selection: ``steps_by_size.py``'s 27 fits (two spirals, moons and the
10-D mixture at 200, 500 and 1,000 rows, seeds 0-2). Confirmation: the
pinwheel at 200 and 1,000 rows (``density_quality.py``'s size sweep; seeds
0-2), which chose nothing here (it failed the refit's confirmation, a
different variant).

Decision rules, set before any run:

1. Selection (``steps_by_size.py``'s rule): a variant passes if its mean KL
   lead over ``default`` (27 paired fits) is more than twice its standard
   error and no (set, size) mean of its KL is more than 5% above
   ``default``'s. If both pass, the larger lead goes on.
2. Confirmation: the variant's mean KL is below ``default``'s at both
   pinwheel sizes.
3. This study changes no default. A confirmed variant is for a later
   session to build into ``FlowMatchingDensity`` (scoring and sampling a
   mixture, its files) and to check on the detector's sets, with
   ``density_quality`` re-run; an unconfirmed one is recorded here.

Run from the repository root (about 35 min on two cores):

    python -m benchmarks.studies.density_members --shard 0/2 &
    python -m benchmarks.studies.density_members --shard 1/2; wait
    python -m benchmarks.studies.density_members --write
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import environment_line, sharded_study, timed
from benchmarks.studies import steps_by_size
from skflow import FlowMatchingDensity
from skflow._nets import log_mean_density, members_of
from skflow._ode import log_likelihood

RUNS = Path("/tmp/density_members_runs.jsonl")
SEEDS = steps_by_size.SEEDS
CONFIRMATION = ("pinwheel", (200, 1_000))
VARIANTS = ("default", "refit", "refit pair", "checkpoint pair")
CANDIDATES = VARIANTS[2:]


class _Members(FlowMatchingDensity):
    """Refits two fields on every row (up to 1,000) and keeps the
    checkpoint early stopping chose, for scoring them one by one."""

    _refit_max_rows = 1_000
    _refit_members = 2

    def _train(self, field, *args, **kwargs):
        n_features, sizes = field.n_features, field.hidden_layer_sizes
        like = next(field.parameters())

        def new_field(seed):
            return self._build_field(n_features, sizes, seed).to(like)

        return super()._train(field, *args, new_field=new_field, **kwargs)

    def _refit(self, initial_fields, checkpoint, *args, **kwargs):
        self.checkpoint_ = copy.deepcopy(checkpoint)
        return super()._refit(initial_fields, checkpoint, *args, **kwargs)

    def _measure_likelihood_error(self, field, *args):
        # FlowMatchingDensity does not score mixtures: measure the first.
        return super()._measure_likelihood_error(members_of(field)[0], *args)


def _jobs():
    selection = [
        ("select", n, seed, name)
        for n in steps_by_size.SIZES
        for seed in SEEDS
        for name in steps_by_size.SET_NAMES
    ]
    name, sizes = CONFIRMATION
    return selection + [("confirm", n, seed, name) for n in sizes for seed in SEEDS]


def _run(part, n_train, seed, name):
    density = steps_by_size.SETS[name]
    X_train = density.sample(n_train, seed)
    X_test = density.sample(steps_by_size.N_TEST, 1000 + seed)
    est = _Members(random_state=seed)
    _, seconds = timed(est.fit, X_train)
    z_test = torch.as_tensor((X_test - est.mean_) / est.scale_, dtype=torch.float32)

    def log_q(field):
        values, _ = log_likelihood(
            field,
            z_test,
            est.path_.log_base_density,
            solver="rk4",
            n_steps=steps_by_size.TEST_STEPS,
        )
        return values.double().numpy() - float(np.log(est.scale_).sum())

    checkpoint = log_q(est.checkpoint_)
    refit, new = (log_q(f) for f in est.vector_field_.members)
    scores = {
        "default": checkpoint,
        "refit": refit,
        "refit pair": log_mean_density([refit, new]),
        "checkpoint pair": log_mean_density([checkpoint, new]),
    }
    log_p = density.log_prob(X_test)
    return [
        {
            "part": part,
            "n_train": n_train,
            "seed": seed,
            "set": name,
            "variant": variant,
            "test_kl": float(np.mean(log_p - log_q_variant)),
            "n_iter": est.n_iter_,
            "fit_seconds": seconds,
        }
        for variant, log_q_variant in scores.items()
    ]


def _kl(runs, variant, part):
    """KL of ``variant``'s fits of ``part``, in (size, set, seed) order."""
    mine = sorted(
        (r for r in runs if r["variant"] == variant and r["part"] == part),
        key=lambda r: (r["n_train"], r["set"], r["seed"]),
    )
    return np.array([r["test_kl"] for r in mine]), mine


def selection_verdicts(runs):
    """Per candidate: (passes, mean lead, its standard error, worst cell's
    KL over default's - 1)."""
    base, rows = _kl(runs, "default", "select")
    cell_of = np.array([f"{r['set']}|{r['n_train']}" for r in rows])
    verdicts = {}
    for variant in CANDIDATES:
        kl, _ = _kl(runs, variant, "select")
        lead = base - kl
        error = lead.std(ddof=1) / np.sqrt(len(lead))
        worst = max(
            kl[cell_of == cell].mean() / base[cell_of == cell].mean() - 1
            for cell in set(cell_of)
        )
        passes = lead.mean() > 2 * error and worst <= steps_by_size.MAX_WORSE
        verdicts[variant] = (bool(passes), lead.mean(), error, worst)
    return verdicts


def _table(runs, part, names, sizes):
    lines = [
        "| set | rows | " + " | ".join(VARIANTS) + " |",
        "|---|---|" + "---|" * len(VARIANTS),
    ]
    for n in sizes:
        for name in names:
            means = []
            for variant in VARIANTS:
                kl = [
                    r["test_kl"]
                    for r in runs
                    if (r["part"], r["set"], r["n_train"], r["variant"])
                    == (part, name, n, variant)
                ]
                means.append(f"{np.mean(kl):.4f}" if kl else "-")
            lines.append(f"| {name} | {n:,} | " + " | ".join(means) + " |")
    return lines


def report(results):
    runs = results["runs"]
    lines = [
        "# Mixtures of fields for small unconditional fits (issue 21)",
        "",
        environment_line(results),
        "",
        f"Test KL(p || q) in nats (lower is better), mean over seeds {list(SEEDS)}. "
        "The variants, sets and decision rules are in the study's docstring.",
        "",
        "## Selection",
        "",
        *_table(runs, "select", steps_by_size.SET_NAMES, steps_by_size.SIZES),
        "",
        "| variant | mean KL lead over default | standard error | worst cell "
        "| passes |",
        "|---|---|---|---|---|",
    ]
    for variant, (passes, lead, error, worst) in selection_verdicts(runs).items():
        lines.append(
            f"| {variant} | {lead:+.4f} | {error:.4f} | {worst:+.1%} | "
            f"{'yes' if passes else 'no'} |"
        )
    name, sizes = CONFIRMATION
    if any(r["part"] == "confirm" for r in runs):
        lines += [
            "",
            "## Confirmation",
            "",
            *_table(runs, "confirm", (name,), sizes),
        ]
    return lines


def main():
    sharded_study(
        "benchmarks.studies.density_members",
        "Mixtures of fields for small unconditional fits.",
        "density_members",
        jobs=_jobs,
        run_one=_run,
        runs=RUNS,
        key=("part", "n_train", "seed", "set"),
        report=report,
    )


if __name__ == "__main__":
    main()
