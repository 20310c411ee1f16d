"""Early stopping: the held-out rows, their cheap score, the best weights.

The moving average of the weights is scored on held-out rows every few
steps, by a fixed-step solve (cheap, and the same discretisation at every
check, so its scores rank checkpoints even where they are biased); the best
weights are kept, and training stops after ``n_iter_no_change`` checks
without improvement.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ._device import draw_seed, make_generator
from ._ode import log_likelihood
from ._paths import ProbabilityPath

__all__ = [
    "BestWeights",
    "HeldOutScore",
    "check_beats_base_density",
    "hold_out",
    "held_out_rows",
    "rows_score",
]

# A kept field whose held-out log-likelihood (per row, standardized units)
# falls more than BASE_MARGIN + BASE_MARGIN_PER_FEATURE * d nats below the
# base density's diverged: sane fits, short or long, even on Gaussian data
# (where the base density is the truth), stay well inside it
# (benchmarks/results/divergence_checks.md).
BASE_MARGIN = 5.0
BASE_MARGIN_PER_FEATURE = 1.0


def held_out_rows(
    sample_weight: np.ndarray,
    fraction: float,
    max_rows: int,
    rng: np.random.RandomState,
) -> np.ndarray | None:
    """Rows held out for early stopping, or None when there are none.

    None when the fraction rounds to no row, or when either side would be
    left without weight.
    """
    n_samples = len(sample_weight)
    n_held_out = min(round(fraction * n_samples), max_rows)
    if n_held_out < 1 or n_held_out >= n_samples:
        return None
    rows = rng.permutation(n_samples)[:n_held_out]
    held_out = sample_weight[rows].sum()
    if held_out <= 0 or held_out >= sample_weight.sum():
        return None
    return rows


def hold_out(
    data: torch.Tensor,
    weights: torch.Tensor,
    sample_weight: np.ndarray,
    path: ProbabilityPath,
    dequantize: torch.Tensor | None,
    rng: np.random.RandomState,
    *,
    fraction: float,
    recipe,
    n_targets: int | None = None,
) -> HeldOutScore | None:
    """Hold rows out of training, and return their score (None if no row
    can be held out): their training ``weights`` are set to 0, so the
    minibatch sampler never draws them. ``n_targets``: rows are ``[y, x]``
    of a conditional field, whose path moves y only."""
    rows = held_out_rows(sample_weight, fraction, recipe.validation_max_rows, rng)
    if rows is None:
        return None
    score = rows_score(
        data, weights, rows, path, dequantize, rng, recipe=recipe, n_targets=n_targets
    )
    weights[rows] = 0
    return score


def rows_score(
    data: torch.Tensor,
    weights: torch.Tensor,
    rows: np.ndarray,
    path: ProbabilityPath,
    dequantize: torch.Tensor | None,
    rng: np.random.RandomState,
    *,
    recipe,
    n_targets: int | None = None,
) -> HeldOutScore:
    """The :class:`HeldOutScore` of the rows ``rows`` of ``data``, its
    noise and probes seeded from ``rng``, its solve the recipe's."""
    return HeldOutScore(
        data[torch.as_tensor(rows, device=data.device)].to(weights.device),
        weights[rows],
        path,
        dequantize,
        make_generator(draw_seed(rng), weights.device),
        n_steps=recipe.validation_steps,
        exact_up_to=recipe.validation_exact_up_to,
        n_targets=n_targets,
    )


class HeldOutScore:
    """``score(field)``: the weighted mean log density of the held-out rows.

    Dequantization noise and Hutchinson probes are drawn once, here, so
    that every checkpoint is scored on the same points.

    Parameters
    ----------
    z : tensor of shape (n, d)
        Standardized held-out rows, on the field's device.
    weights : tensor of shape (n,)
        Their sample weights.
    path : ProbabilityPath
        Gives the base density.
    dequantize : tensor of shape (d,) or None
        Width of the uniform noise of each column (standardized units).
    generator : torch.Generator
        Draws the noise and the probes.
    n_steps : int
        rk4 steps of the solve.
    exact_up_to : int
        The exact divergence where it costs at most this many directions
        pushed through the field (``field.divergence_directions``: the
        features for an MLP, 1 for a HollowNet), one fixed Hutchinson probe
        per row above.
    n_targets : int, default=None
        Rows are ``[y, x]`` of a conditional field: the base density and
        the features counted above are y's, its first ``n_targets``
        columns; None: all columns.
    """

    def __init__(
        self,
        z: torch.Tensor,
        weights: torch.Tensor,
        path: ProbabilityPath,
        dequantize: torch.Tensor | None,
        generator: torch.Generator,
        *,
        n_steps: int,
        exact_up_to: int,
        n_targets: int | None = None,
    ) -> None:
        n, d = z.shape
        self.n_targets = d if n_targets is None else n_targets
        if dequantize is not None:
            noise = torch.rand(z.shape, generator=generator, device=z.device)
            z = z + noise.to(z.dtype) * dequantize
        self.probes = None
        if self.n_targets > exact_up_to:
            signs = torch.randint(0, 2, (n, 1, d), generator=generator, device=z.device)
            self.probes = (2 * signs - 1).to(z.dtype)
        self.exact_up_to = exact_up_to
        self.z = z
        self.weights = (weights / weights.sum()).double()
        self.path = path
        self.n_steps = n_steps

    def log_densities(self, field: nn.Module) -> torch.Tensor:
        """The log density of each held-out row (standardized units)."""
        exact = field.divergence_directions <= self.exact_up_to
        log_density, _ = log_likelihood(
            field,
            self.z,
            self.log_base_density,
            solver="rk4",
            n_steps=self.n_steps,
            probes=None if exact else self.probes,
        )
        return log_density

    def __call__(self, field: nn.Module) -> float:
        return float(self.weights @ self.log_densities(field))

    def base_score(self) -> float:
        """The score of the zero field: the base density's, of the same rows."""
        return float(self.weights @ self.log_base_density(self.z.double()))

    def log_base_density(self, z: torch.Tensor) -> torch.Tensor:
        """The path's base density of the rows' moving columns."""
        return self.path.log_base_density(z[:, : self.n_targets])


def check_beats_base_density(
    scores: list[float], held_out: HeldOutScore, diverged: Callable[[str], str]
) -> None:
    """Raise FloatingPointError where the best held-out score is far below the
    base density's; ``diverged(what)`` words the error."""
    if not scores:
        return
    base = held_out.base_score()
    margin = BASE_MARGIN + BASE_MARGIN_PER_FEATURE * held_out.n_targets
    if not max(scores) >= base - margin:
        raise FloatingPointError(
            diverged(
                f"the held-out log-likelihood ({max(scores):.4g} nats per row) is "
                f"far below the base density's ({base:.4g})"
            )
        )


class BestWeights:
    """The best-scoring weights so far, and when to stop waiting for better."""

    def __init__(self, n_iter_no_change: int | None) -> None:
        self.n_iter_no_change = n_iter_no_change
        self.scores: list[float] = []
        self.state: dict | None = None
        self.best = -math.inf
        self.n_no_change = 0

    def offer(self, module: nn.Module, score: float) -> bool:
        """Keep module's weights if score is the best; True means stop."""
        self.scores.append(score)
        if score > self.best:
            self.best, self.n_no_change = score, 0
            self.state = copy.deepcopy(module.state_dict())
        else:
            self.n_no_change += 1
        return (
            self.n_iter_no_change is not None
            and self.n_no_change >= self.n_iter_no_change
        )
