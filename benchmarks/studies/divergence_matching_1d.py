"""Flow-divergence matching for 1-D densities: a study on sets kept for choosing.

``results/divergence_matching.md`` chose the term on 2-D sets; the default
then also gave it to 1-D densities, unmeasured. Here: plain flow matching
against the default term (weight 0.1 on 128 rows of each minibatch) on two
1-D sets no other benchmark uses, 10,000 fitting and 5,000 test rows, seeds
0, 1, 2; test KL(p || q) in nats (lower is better) and fit seconds, the two
variants of a set and seed timed in one job.

- ``skewed``: 0.35 N(-2, 0.3^2) + 0.65 (a Gamma of shape 2, scale 1):
  a narrow mode beside a skewed one;
- ``steps``: uniform on [-3, -2], [-0.5, 0.5] and [2, 3] with weights 0.25,
  0.5, 0.25: a density with jumps, sharp where flows are weakest.

Decision rule, set before the runs: 1-D densities keep the term if it
lowers the mean KL over the seeds on both sets; else they train without
it (``Recipe.divergence_matching_features = (2,)``).

Run from the repository root (about 15 min on two cores):

    python -m benchmarks.studies.divergence_matching_1d --shard 0/2 &
    python -m benchmarks.studies.divergence_matching_1d --shard 1/2; wait
    python -m benchmarks.studies.divergence_matching_1d --write
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.special import logsumexp

from benchmarks._common import environment_line, sharded_study, timed, with_recipe
from skflow._recipe import Recipe

RUNS = Path("/tmp/divergence_matching_1d_runs.jsonl")
SEEDS = (0, 1, 2)
N_FIT, N_TEST = 10_000, 5_000
VARIANTS = {"flow matching": (), "divergence matching": (1, 2)}


class _Mixture1D:
    """A mixture of frozen scipy distributions, as rows of one column."""

    def __init__(self, weights, parts):
        self.weights, self.parts = np.asarray(weights), parts

    def sample(self, n, seed):
        rng = np.random.default_rng(seed)
        which = rng.choice(len(self.parts), size=n, p=self.weights)
        draws = [part.rvs(size=n, random_state=rng) for part in self.parts]
        return np.choose(which, draws)[:, None]

    def log_prob(self, X):
        with np.errstate(divide="ignore"):
            terms = [
                np.log(w) + part.logpdf(X[:, 0])
                for w, part in zip(self.weights, self.parts, strict=True)
            ]
        return logsumexp(terms, axis=0)


SETS = {
    "skewed": _Mixture1D(
        [0.35, 0.65], [stats.norm(-2, 0.3), stats.gamma(2.0, scale=1.0)]
    ),
    "steps": _Mixture1D(
        [0.25, 0.5, 0.25],
        [stats.uniform(-3, 1), stats.uniform(-0.5, 1), stats.uniform(2, 1)],
    ),
}


def _jobs():
    return [(name, seed) for name in SETS for seed in SEEDS]


def _run(name, seed):
    density = SETS[name]
    train, test = density.sample(N_FIT, seed), density.sample(N_TEST, 1000 + seed)
    runs = []
    for variant, features in VARIANTS.items():
        recipe = dataclasses.replace(Recipe(), divergence_matching_features=features)
        model = with_recipe(recipe)(random_state=seed)
        _, seconds = timed(model.fit, train)
        kl = np.mean(density.log_prob(test) - model.score_samples(test))
        runs.append(
            {
                "set": name,
                "seed": seed,
                "variant": variant,
                "kl": float(kl),
                "fit_seconds": seconds,
                "n_iter": model.n_iter_,
            }
        )
    return runs


def report(results):
    by = {(r["set"], r["seed"], r["variant"]): r for r in results["runs"]}
    plain, term = VARIANTS
    lines = [
        "# Flow-divergence matching for 1-D densities (issue 21)",
        "",
        environment_line(results),
        "",
        "Test KL(p || q) in nats (lower is better) per seed, 10,000 fitting "
        "and 5,000 test rows; fit: the term's fit time over plain flow "
        "matching's for the same set and seed, timed in one job. The sets "
        "and the decision rule are in the study's docstring.",
        "",
        "| set | seed | flow matching | divergence matching | change | "
        "fit over plain's |",
        "|---|---|---|---|---|---|",
    ]
    means = {}
    for name in SETS:
        pairs = [(by[name, s, plain], by[name, s, term]) for s in SEEDS]
        for seed, (a, b) in zip(SEEDS, pairs, strict=True):
            lines.append(
                f"| {name} | {seed} | {a['kl']:.4f} | {b['kl']:.4f} | "
                f"{b['kl'] / a['kl'] - 1:+.0%} | "
                f"{b['fit_seconds'] / a['fit_seconds']:.2f} |"
            )
        means[name] = [np.mean([p[i]["kl"] for p in pairs]) for i in (0, 1)]
        lines.append(
            f"| {name} | mean | {means[name][0]:.4f} | {means[name][1]:.4f} | "
            f"{means[name][1] / means[name][0] - 1:+.0%} | |"
        )
    keep = all(b < a for a, b in means.values())
    lines += [
        "",
        "Decision: 1-D densities "
        + (
            "keep the term: it lowered the mean KL on both sets."
            if keep
            else "train without it (`Recipe.divergence_matching_features = "
            "(2,)`): it did not lower the mean KL on both sets."
        ),
    ]
    return lines


def main():
    sharded_study(
        __spec__.name,
        __doc__.splitlines()[0],
        "divergence_matching_1d",
        jobs=_jobs,
        run_one=_run,
        runs=RUNS,
        key=("set", "seed"),
        report=report,
    )


if __name__ == "__main__":
    main()
