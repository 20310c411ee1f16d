"""Ablation of skflow's training recipe on data with a known density.

Each variant changes one thing from a base recipe and is fitted on 10,000
points of each known-density set (``known_densities.py``); the metric is
the test KL(p || q) on 5,000 fresh points, paired across variants (the same
training and test points for every variant). A variant passes estimator
parameters, changes to ``skflow._recipe.Recipe`` (through a subclass of the
estimator) or another network. Fit times are not compared here (the runs
may share the machine): see ``density_quality.py`` for timed results.

Run from the repository root; ``--shard i/n`` runs every n-th run so that
two processes (one torch thread each) can share a 2-core machine:

    python -m benchmarks.studies.recipe_ablation --shard 0/2 &
    python -m benchmarks.studies.recipe_ablation --shard 1/2; wait
    python -m benchmarks.studies.recipe_ablation --report

``--seeds 1 --variants "0.2.0 defaults" "4 x 256"`` repeats chosen rows on another
seed; the report lists them under the seed-0 table. ``--sets "8 gaussians"``
limits a run to some of the sets (the 4x row ran on two).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
from torch import nn

from benchmarks._common import (
    RESULTS,
    read_runs,
    run_shard,
    shard,
    timed,
    with_recipe,
    write_markdown,
)
from benchmarks.known_densities import KNOWN_DENSITIES
from skflow import FlowMatchingDensity
from skflow._nets import VectorField
from skflow._recipe import Recipe


class _AutogradField(VectorField):
    """A variant network: VectorField's closed-form divergence does not hold
    for it, so its divergence is taken by autograd when scored."""

    velocity_and_divergence = None


class _TanhField(_AutogradField):
    """The default network with tanh activations."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for index in range(1, len(self.mlp), 2):
            self.mlp[index] = nn.Tanh()


class _ResidualField(_AutogradField):
    """The default network with skip connections around the hidden layers."""

    def forward(self, t, x):
        first, *hidden, last = list(self.mlp)[::2]
        h = nn.functional.silu(first(self._inputs(t, x)))
        for linear in hidden:
            h = h + nn.functional.silu(linear(h))
        return last(h)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the ablation."""

    params: dict = dataclasses.field(default_factory=dict)  # of the estimator
    recipe: dict = dataclasses.field(default_factory=dict)  # fields of Recipe
    network: type[VectorField] | None = None


RUNS = RESULTS / "recipe_ablation_runs.jsonl"
PREVIOUS_RUNS = RESULTS / "recipe_ablation_previous_runs.jsonl"
SEEDS = (0,)
N_TRAIN, N_TEST = 10_000, 5_000

# Every row starts from skflow 0.2.0's defaults: a 3 x 256 SiLU network,
# 8,000 steps for 10,000 rows.
BASE = Variant(
    params={"hidden_layer_sizes": (256, 256, 256), "max_iter": 8000},
    recipe={"activation": "silu"},
)
# 0.3's recipe: these parameters, and GELU.
PARAMS_0_3 = {"hidden_layer_sizes": (256,) * 4, "max_iter": 7000}
GELU = {"activation": "gelu"}
VARIANTS = {
    "0.2.0 defaults": Variant(),
    "no Fourier features": Variant(recipe={"n_fourier_features": 0}),
    "Fourier scale / 2": Variant(recipe={"fourier_scale_factor": 0.5}),
    "Fourier scale x 2": Variant(recipe={"fourier_scale_factor": 2.0}),
    "t uniform (a=0)": Variant(recipe={"time_skew": 0.0}),
    "t skewed more (a=3)": Variant(recipe={"time_skew": 3.0}),
    "no early stopping": Variant({"n_iter_no_change": None}),
    "half the steps": Variant({"max_iter": 4000}),
    "twice the steps": Variant({"max_iter": 16000}),
    "path ot-cfm": Variant({"path": "ot-cfm"}),
    "learning rate 1e-3": Variant({"learning_rate": 1e-3}),
    "learning rate 5e-3": Variant({"learning_rate": 5e-3}),
    "batch 256": Variant({"batch_size": 256}),
    "batch 256, twice the steps": Variant({"batch_size": 256, "max_iter": 16000}),
    "4 x 256": Variant({"hidden_layer_sizes": (256,) * 4}),
    "residual connections": Variant(network=_ResidualField),
    "GELU": Variant(recipe=GELU),
    "tanh": Variant(network=_TanhField),
    "no EMA": Variant(recipe={"ema_decay": 0.0}),
    "gradient clipping (norm 0.3)": Variant(recipe={"gradient_clip_norm": 0.3}),
    "t logit-normal (0, 1)": Variant(recipe={"time_sampling": "logit-normal"}),
    "4 x 256, GELU": Variant({"hidden_layer_sizes": (256,) * 4}, GELU),
    "4 x 256, GELU, 7,000 steps": Variant(PARAMS_0_3, GELU),
    "4 x 256, GELU, no early stopping": Variant(
        {"hidden_layer_sizes": (256,) * 4, "n_iter_no_change": None}, GELU
    ),
    # Changes from 0.3's recipe.
    "0.3, stratified t": Variant(PARAMS_0_3, GELU | {"time_sampling": "stratified"}),
    "0.3, twice the steps": Variant(PARAMS_0_3 | {"max_iter": 14000}, GELU),
    "0.3, 4x the steps": Variant(PARAMS_0_3 | {"max_iter": 28000}, GELU),
    "0.3, batch 1024, 3,500 steps": Variant(
        PARAMS_0_3 | {"max_iter": 3500, "batch_size": 1024}, GELU
    ),
}


def _recipe(variant: Variant) -> Recipe:
    return dataclasses.replace(Recipe(), **(BASE.recipe | variant.recipe))


def estimator(variant: Variant, seed: int) -> FlowMatchingDensity:
    """The base estimator with the variant's changes, unfitted."""
    base = FlowMatchingDensity
    if variant.network is not None:
        # Initial weights come from the estimator's own forked, seeded RNG.
        base = type(base.__name__, (base,), {"_network": variant.network})
    params = BASE.params | variant.params
    return with_recipe(_recipe(variant), base)(random_state=seed, **params)


def run_one(variant, set_name, seed):
    density = KNOWN_DENSITIES[set_name]
    X_train = density.sample(N_TRAIN, seed)
    X_test = density.sample(N_TEST, 1000 + seed)
    est, fit_seconds = timed(estimator(VARIANTS[variant], seed).fit, X_train)
    kl = float(np.mean(density.log_prob(X_test) - est.score_samples(X_test)))
    result = {
        "variant": variant,
        "dataset": set_name,
        "seed": seed,
        "kl": kl,
        "fit_seconds": fit_seconds,
        "n_iter": est.n_iter_,
    }
    print(json.dumps(result), flush=True)
    return result


def _table(runs, variants, sets, seed=0):
    runs = [r for r in runs if r["seed"] == seed]
    lines = [
        "| variant | " + " | ".join(sets) + " |",
        "|---" * (len(sets) + 1) + "|",
    ]
    for variant in variants:
        cells = []
        for set_name in sets:
            kls = [
                r["kl"]
                for r in runs
                if r["variant"] == variant and r["dataset"] == set_name
            ]
            cells.append(f"{np.mean(kls):.3f}" if kls else "")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines


def _seed_noise(runs):
    """Mean |KL(seed 0) - KL(seed s)| over the (variant, set) run on both,
    and how many there are."""
    kl = {(r["variant"], r["dataset"], r["seed"]): r["kl"] for r in runs}
    differences = [
        abs(value - kl[variant, dataset, 0])
        for (variant, dataset, seed), value in kl.items()
        if seed != 0 and (variant, dataset, 0) in kl
    ]
    return float(np.mean(differences)), len(differences)


def _means_over_seeds(runs, sets):
    """Mean KL over every set and seed, for the variants run on every set
    with more than one seed."""
    means = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        seeds = {r["seed"] for r in mine}
        complete = len(mine) == len(seeds) * len(sets)
        if len(seeds) > 1 and complete:
            means[variant] = np.mean([r["kl"] for r in mine])
    return "; ".join(f"'{v}' {m:.3f}" for v, m in means.items())


def _recipe_lines():
    """The base recipe, as this script runs it."""
    recipe = _recipe(Variant())
    params = FlowMatchingDensity().get_params() | BASE.params
    widths = params["hidden_layer_sizes"]
    full_decay_step = round((10 * recipe.ema_decay - 1) / (1 - recipe.ema_decay))
    return [
        f"skflow 0.2.0's defaults: {len(widths)} x {widths[0]} "
        f"`{recipe.activation}` MLP on z, {recipe.n_fourier_features} random "
        f"Fourier features of z (frequency scale {recipe.fourier_scale(2):g} "
        f"in 2-D, {recipe.fourier_scale(2):g} (2/d)^1.5 above) and "
        f"{recipe.n_time_frequencies} sin/cos pairs of t; Adam at "
        f"{params['learning_rate']:g} with {recipe.warmup_fraction:.0%} "
        f"warm-up and cosine decay; batch {params['batch_size']}; EMA "
        f"{recipe.ema_decay:g}; training times t = u^(1/{1 + recipe.time_skew:g}); "
        f"{params['max_iter']:,} steps; early "
        f"stopping on the log-likelihood of {recipe.validation_max_rows} "
        f"held-out rows (`n_iter_no_change={params['n_iter_no_change']}` of "
        f"{recipe.validation_checks} checks, best weights kept); path "
        f"`{params['path']}`, sigma {params['sigma']:g}.",
        "",
        "The EMA's decay is warmed up as (1 + s) / (10 + s) at step s and "
        f"capped at {recipe.ema_decay:g}, which it reaches after "
        f"{full_decay_step:,} steps: up to there it averages about the last "
        "ninth of the steps taken. Residual connections add the input of "
        "each hidden layer to its output. Logit-normal t is sigmoid(N(0, 1)); "
        "stratified t is one uniform shift of an even grid of the batch's "
        "times, then skewed (less variance in the loss's time average).",
    ]


def report():
    sets = list(KNOWN_DENSITIES)
    runs = read_runs(RUNS)
    table = _table(runs, VARIANTS, sets)
    if any("|  |" in line for line in table):
        table += [
            "",
            "Blank cells were not run (`--sets` limits a run to some sets; "
            "the script resumes where it stopped).",
        ]
    # Later seeds (--seeds), to check the differences that matter.
    other_seeds = []
    for seed in sorted({r["seed"] for r in runs} - {0}):
        seed_runs = [r for r in runs if r["seed"] == seed]
        variants = [v for v in VARIANTS if any(r["variant"] == v for r in seed_runs)]
        other_seeds += [
            f"Seed {seed}, for the variants run on it:",
            "",
            *_table(seed_runs, variants, sets, seed),
            "",
        ]
    noise, n_pairs = _seed_noise(runs)
    lines = [
        "# Recipe ablation",
        "",
        f"Test KL(p || q) in nats (lower is better) on {N_TEST:,} test points, "
        f"after fitting {N_TRAIN:,} points; seed 0, and later seeds for some "
        f"rows: two seeds of one row differ by {noise:.3f} nats on average "
        f"({n_pairs} pairs). Each row changes one thing from skflow 0.2.0's "
        "defaults (below), except the rows from '4 x 256, GELU' on: that row "
        "combines two changes; with 7,000 steps it is skflow 0.3's default "
        "recipe; the next row drops its early stopping (`n_iter_no_change="
        "None`: no held-out split, all the steps, the last weights kept); "
        "the '0.3, ...' rows change one thing from 0.3's recipe. Mean over "
        f"the sets and seeds: {_means_over_seeds(runs, sets)}. Regenerate "
        "with the commands in `benchmarks/studies/recipe_ablation.py`.",
        "",
        "## The recipe the rows change",
        "",
        *_recipe_lines(),
        "",
        *table,
        "",
        *other_seeds,
        "## The previous recipe (skflow 0.1.0, no Fourier features)",
        "",
        "Measured first, on the 0.1.0 defaults (no Fourier features, uniform "
        "t, fixed `max_iter`, no held-out split); each row changes one thing "
        "from 6,000 steps.",
        "",
    ]
    previous = read_runs(PREVIOUS_RUNS)
    lines += _table(previous, list(dict.fromkeys(r["variant"] for r in previous)), sets)
    write_markdown("recipe_ablation", lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shard", type=shard, default="0/1")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    parser.add_argument("--sets", nargs="*", default=list(KNOWN_DENSITIES))
    args = parser.parse_args()
    if args.report:
        report()
        return
    jobs = [
        (variant, set_name, seed)
        for seed in args.seeds
        for variant in args.variants
        for set_name in args.sets
    ]
    key = ("variant", "dataset", "seed")
    run_shard(jobs, args.shard, run_one, RUNS, key)


if __name__ == "__main__":
    main()
