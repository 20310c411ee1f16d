"""Choosing the HollowNet field's design on sets no report uses (issue 18).

``benchmarks/results/cheap_divergence.md`` found a FLOP-matched HollowNet
(Chen & Duvenaud 2019) better than the default MLP on 16-D and 64-D
mixtures and on digits, at a seventh to a fortieth of the scoring cost,
and worse on the 10-D mixture and breast_cancer. Two of those sets are the
density benchmark's, so this study decides on other sets:

- Gaussian mixtures (``engine_levers.mixture``) in 16 and 32 dimensions
  with other seeds than any report's, 5,000 training rows, test
  KL(p || q) on 5,000 fresh rows;
- statsmodels' ``star98`` (303 x 22) and ``macrodata`` (203 x 12, the
  year and quarter left out): small real tables, where the MLP overfits;
  80/20 splits, mean test log-likelihood;
- two thin 2-D rings (``known_densities.two_rings``, added after the
  envelope, with the MLP and ``architecture="hollow"`` only): a sharp
  density in 2-D, test KL.

Networks: the default MLP; ``skflow._hollow.HollowVectorField`` without
its envelope and with its time-linear coupling A(t) x held at zero (the
study's HollowNet of ``cheap_divergence``); with A(t) trained; both with
early stopping's held-out rows scored by one Hutchinson probe, as for the
MLP; the same with the held-out rows scored by the one-pass exact
divergence; and ``architecture="hollow"``, which adds the envelope that
hands the field to A(t) x far from the data (far rows' trajectories ran
away without it: the user guide's "Choosing the network"). The widths are
``hollow_layer_sizes`` (FLOP-matched); the training is the default's.

The committed runs were made before ``HollowVectorField`` was laid out
(feature, row, unit) for speed: the same function of the same parameters,
whose float32 round-off, and so a re-run's figures, may differ slightly.

    python -m benchmarks.studies.hollow_field --shard 0/2 &
    python -m benchmarks.studies.hollow_field --shard 1/2; wait
    python -m benchmarks.studies.hollow_field --report
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

import skflow
from benchmarks._common import (
    environment,
    environment_line,
    read_runs,
    run_shard,
    shard,
    write_results,
)
from benchmarks.known_densities import two_rings
from benchmarks.studies.engine_levers import mixture
from skflow import FlowMatchingDensity
from skflow._hollow import HollowVectorField

N_TRAIN, N_TEST = 5_000, 5_000
DEFAULT_RUNS = Path(tempfile.gettempdir()) / "hollow_field_runs.jsonl"


class _NoEnvelope(HollowVectorField):
    """The HollowNet without its envelope: the units reach arbitrarily far."""

    envelope_radius = math.inf


class _HutchinsonHeldOut(_NoEnvelope):
    """As the first runs of this study were made: early stopping scores the
    held-out rows with one Hutchinson probe per row above 3 features, as
    for the MLP (skflow's HollowNet uses its one-pass exact divergence)."""

    @property
    def divergence_directions(self) -> int:
        return self.n_features


class _Uncoupled(_HutchinsonHeldOut):
    """HollowNet alone: the linear coupling stays at its zero start."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.linear.requires_grad_(False)


def _hollow(network):
    """``architecture="hollow"`` with ``network`` for the field (the
    "auto" widths: ``hollow_layer_sizes`` of the default MLP)."""
    estimator = type("Hollow", (FlowMatchingDensity,), {"_hollow_network": network})
    return partial(estimator, architecture="hollow")


NETWORKS = {
    "MLP (default)": FlowMatchingDensity,
    "HollowNet": _hollow(_Uncoupled),
    "HollowNet + A(t) x": _hollow(_HutchinsonHeldOut),
    "+ exact held-out checks": _hollow(_NoEnvelope),
    'architecture="hollow" (+ envelope)': _hollow(HollowVectorField),
}


def _known(density):
    def split(seed):
        train = density.sample(N_TRAIN, 500 + seed)
        test = density.sample(N_TEST, 1500 + seed)
        return train, test, density.log_prob(test)

    return split


def _statsmodels(name, drop=()):
    def split(seed):
        import statsmodels.api as sm

        data = getattr(sm.datasets, name).load_pandas().data
        X = data.drop(columns=list(drop)).select_dtypes("number").to_numpy(float)
        train, test = train_test_split(X, test_size=0.2, random_state=seed)
        return train, test, None

    return split


# name: (split of a seed, seeds)
SETS = {
    "star98": (_statsmodels("star98"), (0, 1, 2)),
    "macrodata": (_statsmodels("macrodata", ("year", "quarter")), (0, 1, 2)),
    "mixture (16-D, seed 1)": (_known(mixture(16, seed=1)), (0, 1)),
    "mixture (32-D, seed 2)": (_known(mixture(32, seed=2)), (0, 1)),
    "two rings (2-D)": (_known(two_rings()), (0, 1)),
}


def run_one(set_name: str, network_name: str, seed: int) -> dict:
    warnings.simplefilter("ignore")
    split, _ = SETS[set_name]
    train, test, log_p = split(seed)
    print(f"{set_name} / {network_name} / seed {seed}", flush=True)
    model = NETWORKS[network_name](random_state=seed).fit(train)
    with skflow.solver_stats() as stats:
        log_q = model.score_samples(test)
    scores = model.validation_scores_
    result = {
        "set": set_name,
        "network": network_name,
        "seed": seed,
        "n_features": train.shape[1],
        "kind": "kl" if log_p is not None else "loglik",
        "metric": float(
            np.mean(log_p - log_q) if log_p is not None else np.mean(log_q)
        ),
        "hidden_layer_sizes": list(model.vector_field_.hidden_layer_sizes),
        "n_parameters": sum(p.numel() for p in model.vector_field_.parameters()),
        "n_iter": model.n_iter_,
        "best_check": int(np.argmax(scores)) + 1 if scores else None,
        "n_validation_checks": len(scores),
        "divergence_evaluations_per_chunk": stats.n_divergence_evaluations
        / stats.n_chunks,
        "evaluations_per_chunk": stats.n_evaluations / stats.n_chunks,
    }
    print(result, flush=True)
    return result


def markdown(results: dict) -> list[str]:
    runs = results["runs"]
    lines = [
        "# HollowNet field: design chosen on sets no report uses (issue 18)",
        "",
        environment_line(results),
        "",
        "Default training for every network; only the field changes. "
        "Mixtures: test KL(p || q) in nats (lower is better); star98 and "
        "macrodata: mean test log-likelihood (higher is better), 80/20 "
        "splits. One row per seed, then the mean.",
        "",
        "| set | seed | " + " | ".join(NETWORKS) + " |",
        "|---|---|" + "---|" * len(NETWORKS),
    ]
    for set_name, (_, seeds) in SETS.items():
        by = {(r["network"], r["seed"]): r for r in runs if r["set"] == set_name}
        for seed in (*seeds, "mean"):
            cells = []
            for network in NETWORKS:
                values = [by[network, s]["metric"] for s in seeds if (network, s) in by]
                if seed == "mean":
                    cells.append(
                        f"**{np.mean(values):.3f}**"
                        if len(values) == len(seeds)
                        else ""
                    )
                else:
                    run = by.get((network, seed))
                    cells.append(f"{run['metric']:.3f}" if run else "")
            lines.append(f"| {set_name} | {seed} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Steps taken, the held-out check kept / checks, and the solver's "
        "evaluations per chunk (with the divergence) when scoring the test "
        "rows, seed 0:",
        "",
        "| set | network | widths | parameters | steps | best check "
        "| evaluations (with div.) |",
        "|---|---|---|---|---|---|---|",
    ]
    first_seed = {(r["set"], r["network"]): r for r in runs if r["seed"] == 0}
    for run in (
        first_seed[key]
        for key in itertools.product(SETS, NETWORKS)
        if key in first_seed
    ):
        lines.append(
            f"| {run['set']} | {run['network']} | {run['hidden_layer_sizes']} | "
            f"{run['n_parameters']:,} | {run['n_iter']} | {run['best_check']}/"
            f"{run['n_validation_checks']} | {run['evaluations_per_chunk']:.0f} "
            f"({run['divergence_evaluations_per_chunk']:.0f}) |"
        )
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--shard", type=shard, default=(0, 1))
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS)
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.report:
        results = environment(__spec__.name)
        results["runs"] = read_runs(args.runs)
        write_results("hollow_field", results, markdown(results))
        return
    jobs = [
        (set_name, network, seed)
        for set_name in args.sets
        for seed in SETS[set_name][1]
        for network in args.networks
    ]
    run_shard(jobs, args.shard, run_one, args.runs, ("set", "network", "seed"))


if __name__ == "__main__":
    main()
