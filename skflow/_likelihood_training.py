"""Maximum-likelihood fine-tuning: a short stage after flow matching.

Flow matching regresses the field on a path's velocities; it does not
maximize the likelihood the model is scored by, and that gap is largest
where the field is sharp. This stage descends the negative log-likelihood
of minibatches through a fixed-step RK4 solve of the likelihood ODE
(discretize-then-optimize), with steps dense near the data end, plus a
kinetic-energy penalty (RNODE, Finlay et al. 2020) that keeps the field
easy to solve.

A fixed grid can be gamed: the field learns to score well on the grid and
not under the ODE. So the fine-tuned weights are checked at the end on the
held-out rows (training rows where none are held out) under the
estimator's own scoring solver, against the flow-matching weights, and
rejected if they score clearly worse. The check does not choose among
checkpoints: on a few hundred rows, gains of the size fine-tuning makes
are within the noise (benchmarks/results/likelihood_finetuning.md, which
also says why the constants are what they are).
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ._paths import ProbabilityPath
from ._training import (
    _adam,
    _ExponentialMovingAverage,
    _Minibatches,
    _Progress,
    velocity_and_exact_divergence,
)

__all__ = ["fine_tune_likelihood", "grid_log_likelihood", "not_worse"]

# The fine-tuned weights are rejected when their check rows' mean log
# density falls by more than this many standard errors.
WORSE_BY_STANDARD_ERRORS = 2.0


def grid_log_likelihood(
    field: nn.Module,
    x1: torch.Tensor,
    log_base_density: Callable,
    *,
    n_steps: int,
    n_moving: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log densities of the rows ``x1`` by ``n_steps`` RK4 steps from t = 1
    to 0 at t = 1 - s^2 (s uniform: dense near the data end), differentiable
    in the field's weights; and each row's kinetic energy, the integral of
    |v|^2 over t by the same steps.

    Only the first ``n_moving`` columns move; the others (a condition)
    must have zero velocity.
    """
    s = torch.linspace(0, 1, n_steps + 1, dtype=torch.float64)
    times = (1 - s.square()).tolist()
    z = x1
    integral = torch.zeros(len(x1), dtype=x1.dtype, device=x1.device)
    kinetic = torch.zeros_like(integral)

    def f(t, state):
        return velocity_and_exact_divergence(field, t, state, n_moving)

    for start, end in itertools.pairwise(times):
        h = end - start
        t = torch.tensor(start, dtype=x1.dtype, device=x1.device)
        v1, d1 = f(t, z)
        v2, d2 = f(t + h / 2, z + h / 2 * v1)
        v3, d3 = f(t + h / 2, z + h / 2 * v2)
        v4, d4 = f(t + h, z + h * v3)
        z = z + h / 6 * (v1 + 2 * v2 + 2 * v3 + v4)
        integral = integral + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
        s1, s2, s3, s4 = (v[:, :n_moving].square().sum(-1) for v in (v1, v2, v3, v4))
        kinetic = kinetic - h / 6 * (s1 + 2 * s2 + 2 * s3 + s4)
    # log p1(x1) = log p0(z0) - int_0^1 div dt, and ``integral`` runs 1 -> 0.
    return log_base_density(z) + integral, kinetic


def fine_tune_likelihood(
    field: nn.Module,
    path: ProbabilityPath,
    data: torch.Tensor,
    sample_weight: torch.Tensor,
    *,
    max_iter: int,
    learning_rate: float,
    generator: torch.Generator,
    recipe,
    dequantize: torch.Tensor | None = None,
    n_targets: int | None = None,
    verbose: int = 0,
) -> tuple[nn.Module, list[float]]:
    """Descend the negative log-likelihood of weighted minibatches of ``data``.

    Parameters
    ----------
    field : nn.Module
        The flow-matching field (left unchanged: a copy is trained).
    path, data, sample_weight, generator, dequantize, n_targets
        As for :func:`skflow._training.train_vector_field`.
    max_iter : int
        Optimizer steps; fewer only if the loss stops being finite.
    learning_rate : float
        Adam's (constant) learning rate.
    recipe : skflow._recipe.Recipe
        The stage's constants (``likelihood_*``).
    verbose : int
        Progress reports, as for the flow-matching loop.

    Returns
    -------
    field : nn.Module
        The moving average of the fine-tuned weights, in eval mode, without
        gradients: to be checked with :func:`not_worse` before use.
    losses : list of float
        The minibatch negative log-likelihood of each step taken (nats per
        row, standardized units, on the grid).
    """
    n_features = data.shape[1]
    n_moving = n_features if n_targets is None else n_targets
    minibatches = _Minibatches(
        path,
        data,
        sample_weight,
        batch_size=recipe.likelihood_batch_size,
        generator=generator,
        dequantize=dequantize,
        time_sampling="power",
        time_skew=0.0,
        n_targets=n_targets,
    )

    def log_base_density(z):
        return path.log_base_density(z[:, :n_moving])

    trained = copy.deepcopy(field).requires_grad_(True).train()
    optimizer = _adam(trained.parameters(), learning_rate)
    average = _ExponentialMovingAverage(trained, recipe.likelihood_ema_decay)
    progress = _Progress(max_iter, verbose, what="likelihood")
    losses: list[float] = []
    try:
        for step in range(max_iter):
            x1 = minibatches.rows()
            log_density, kinetic = grid_log_likelihood(
                trained,
                x1,
                log_base_density,
                n_steps=recipe.likelihood_steps,
                n_moving=n_moving,
            )
            loss = -log_density.mean()
            objective = loss + recipe.likelihood_kinetic_weight * kinetic.mean()
            if not torch.isfinite(objective):
                warnings.warn(
                    f"Likelihood fine-tuning diverged at step {step + 1} of "
                    f"{max_iter}; the weights before it are checked instead.",
                    UserWarning,
                    stacklevel=3,
                )
                break
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            average.update(trained, step)
            losses.append(float(loss.detach()))
            progress.update(step + 1, loss.detach())
    finally:
        progress.bar.close()
    return average.module.requires_grad_(False).eval(), losses


def not_worse(before, after, weights) -> bool:
    """Whether ``after`` (log densities of the check rows; None where the
    solve failed) is not worse than ``before`` by more than
    WORSE_BY_STANDARD_ERRORS standard errors of the weighted mean
    difference: fine-tuning's gains are often below the noise of a few
    hundred rows, so only a clear loss (a field that games the grid, or
    diverged) rejects it."""
    if after is None or not np.isfinite(after).all():
        return False
    if before is None:
        return True
    weights = weights / weights.sum()
    difference = after - before
    mean = weights @ difference
    standard_error = np.sqrt(np.square(weights) @ np.square(difference - mean))
    return bool(mean >= -WORSE_BY_STANDARD_ERRORS * standard_error)
