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
3. A fourth part, added after rules 1 and 2 had decided (the refit pair
   passes both) and before its runs: the outlier detector, on the sets of
   ``anomaly_detection.py`` that train on at most 1,000 rows (selection:
   anes96, 330 rows; report: modechoice, 378 rows; fair and randhie train
   on more and would not change), seeds 0-2, scored by ROC-AUC and average
   precision. The refit pair passes for the detector if anes96's mean
   ROC-AUC and AP over seeds do not fall, and is confirmed if
   modechoice's do not fall either.
4. This study changes no default. A confirmed variant is for a later
   session to build into ``FlowMatchingDensity`` (scoring and sampling a
   mixture, its files) and to check on the detector's sets, with
   ``density_quality`` re-run; an unconfirmed one is recorded here.

Outcome (``results/density_members.md``):

- Selection: both mixtures pass, every one of the nine (set, size) cells
  lower by 6% or more; the refit pair leads by 0.074 +- 0.015 nats, the
  checkpoint pair by 0.072 +- 0.013, so the refit pair goes on.
- Confirmation: **passes**, narrowly at 200 rows. The pinwheel's mean KL
  falls from 0.2907 to 0.2458 at 1,000 rows (every seed) and from 0.8271
  to 0.8241 at 200 (one seed better, one level, one worse). The
  checkpoint pair, which the rule did not carry on, did better at 200
  (0.7931, every seed).
- Detector: **fails**. anes96's ROC-AUC falls from 0.721 to 0.716 and its
  AP from 0.785 to 0.774 (the checkpoint pair: 0.719 and 0.779); the
  report set, not needed for the verdict, gains a little (modechoice
  0.919 to 0.922).

So the refit pair is for a later session to build into
``FlowMatchingDensity`` for fits of at most 1,000 rows, with
``density_quality`` re-run, while the detector keeps one field.

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
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmarks import anomaly_detection
from benchmarks._common import environment_line, sharded_study, timed, with_field
from benchmarks.studies import steps_by_size
from skflow import FlowMatchingDensity, FlowMatchingOutlierDetector
from skflow._nets import log_mean_density, members_of
from skflow._ode import log_likelihood

RUNS = Path("/tmp/density_members_runs.jsonl")
SEEDS = steps_by_size.SEEDS
CONFIRMATION = ("pinwheel", (200, 1_000))
VARIANTS = ("default", "refit", "refit pair", "checkpoint pair")
CANDIDATES = VARIANTS[2:]
DETECTOR_SETS = (
    "anes96, vote 1 as anomalies",
    "modechoice, chosen mode as anomalies",
)


def _with_members(base):
    """``base`` refitting two fields on every row (up to 1,000 rows) and
    keeping them and early stopping's checkpoint, to score one by one; the
    model it scores itself is the first refit."""

    class Members(base):
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
            mixture = super()._refit(initial_fields, checkpoint, *args, **kwargs)
            self.members_ = members_of(mixture)
            return self.members_[0]

    return Members


_MEMBERS = _with_members(FlowMatchingDensity)
_DETECTOR_MEMBERS = _with_members(FlowMatchingOutlierDetector)


def _jobs():
    detector = [
        ("detector", None, seed, name) for name in DETECTOR_SETS for seed in SEEDS
    ]
    selection = [
        ("select", n, seed, name)
        for n in steps_by_size.SIZES
        for seed in SEEDS
        for name in steps_by_size.SET_NAMES
    ]
    name, sizes = CONFIRMATION
    confirmation = [("confirm", n, seed, name) for n in sizes for seed in SEEDS]
    return selection + confirmation + detector


def _variants(est, score):
    """Each variant's log densities of the test rows, ``score(field)`` being
    one field's."""
    checkpoint = score(est.checkpoint_)
    refit, new = (score(field) for field in est.members_)
    return {
        "default": checkpoint,
        "refit": refit,
        "refit pair": log_mean_density([refit, new]),
        "checkpoint pair": log_mean_density([checkpoint, new]),
    }


def _detector_run(seed, name):
    group = anomaly_detection.TASKS[name][0]
    splits = anomaly_detection.splits((group,))
    (split,) = [split for split in splits if split[:2] == (name, seed)]
    _, _, train, test, truth = split
    est = _DETECTOR_MEMBERS(random_state=seed)
    _, seconds = timed(est.fit, train)

    def score(field):
        with with_field(est, field):
            return est.score_samples(test)

    return [
        {
            "part": "detector",
            "n_train": None,
            "seed": seed,
            "set": name,
            "group": group,
            "rows_fitted": len(train),
            "variant": variant,
            "roc_auc": roc_auc_score(truth, -log_density),
            "average_precision": average_precision_score(truth, -log_density),
            "n_iter": est.n_iter_,
            "fit_seconds": seconds,
        }
        for variant, log_density in _variants(est, score).items()
    ]


def _run(part, n_train, seed, name):
    if part == "detector":
        return _detector_run(seed, name)
    density = steps_by_size.SETS[name]
    X_train = density.sample(n_train, seed)
    X_test = density.sample(steps_by_size.N_TEST, 1000 + seed)
    est = _MEMBERS(random_state=seed)
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

    scores = _variants(est, log_q)
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
        "Decision: no default changes here (rule 4). The refit pair passes "
        "selection and, narrowly at 200 rows, the pinwheel's confirmation: "
        "it is for a later session to build into `FlowMatchingDensity` for "
        "fits of at most 1,000 rows, with `density_quality` re-run. The "
        "detector fails on anes96 (ROC-AUC and AP fall) and keeps one field.",
        "",
        "## Selection",
        "",
        *_table(runs, "select", steps_by_size.SET_NAMES, steps_by_size.SIZES),
        "",
        "| variant | mean KL lead over default | standard error | worst cell's "
        "KL change | passes |",
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
    detector = [r for r in runs if r["part"] == "detector"]
    if detector:
        lines += [
            "",
            "## The detector (rule 3): ROC-AUC / average precision",
            "",
            "| set | group | rows fitted | " + " | ".join(VARIANTS) + " |",
            "|---|---|---|" + "---|" * len(VARIANTS),
        ]
        for name in DETECTOR_SETS:
            mine = [r for r in detector if r["set"] == name]
            cells = []
            for variant in VARIANTS:
                chosen = [r for r in mine if r["variant"] == variant]
                roc_auc = np.mean([r["roc_auc"] for r in chosen])
                precision = np.mean([r["average_precision"] for r in chosen])
                cells.append(f"{roc_auc:.3f} / {precision:.3f}")
            lines.append(
                f"| {name} | {mine[0]['group']} | {mine[0]['rows_fitted']} | "
                + " | ".join(cells)
                + " |"
            )
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
