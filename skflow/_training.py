"""The flow-matching training loop.

Minibatches, times and noise all come from one ``torch.Generator``, so a
seed fixes the whole run. The returned network is an exponential moving
average (EMA) of the trained weights, which is what scoring and sampling use.
The constants of the loop come from the caller (the estimator's recipe,
``skflow._recipe.Recipe``).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn
from tqdm import tqdm

from ._early_stopping import BestWeights
from ._paths import ProbabilityPath

__all__ = [
    "TIME_SAMPLERS",
    "diverged_message",
    "train_vector_field",
    "velocity_and_exact_divergence",
]

# The losses are checked for NaN/inf every this many steps: one host sync
# per check instead of one per step.
_FINITE_CHECK_EVERY = 50


def _power_times(uniform: Callable, normal: Callable, n: int, skew: float):
    """t = u^(1 / (1 + skew)), u uniform: skew > 0 favours the data end."""
    return uniform(n, 1) ** (1.0 / (1.0 + skew))


def _logit_normal_times(uniform: Callable, normal: Callable, n: int, skew: float):
    """t = sigmoid(N(0, 1)), as in Esser et al. (2024); ``skew`` is unused."""
    return torch.sigmoid(normal(n, 1))


def _stratified_times(uniform: Callable, normal: Callable, n: int, skew: float):
    """One uniform shift of an even grid (one t per stratum), then skewed."""
    shift = uniform(1, 1)
    grid = torch.arange(n, dtype=shift.dtype, device=shift.device).unsqueeze(1) / n
    return ((shift + grid) % 1.0) ** (1.0 / (1.0 + skew))


# name: draw(uniform, normal, n, skew) -> times of shape (n, 1)
TIME_SAMPLERS = {
    "power": _power_times,
    "logit-normal": _logit_normal_times,
    "stratified": _stratified_times,
}


def _learning_rate_factor(max_iter: int, warmup_fraction: float):
    """Linear warm-up, then cosine decay to zero (a one-cycle schedule)."""
    warmup = max(1, int(warmup_fraction * max_iter))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, max_iter - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _adam(parameters, learning_rate: float) -> torch.optim.Adam:
    """Adam, with its fused kernel wherever the device has one (the same
    update in one kernel); devices without it get the default one."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=learning_rate, fused=True)
    except RuntimeError:
        return torch.optim.Adam(parameters, lr=learning_rate)


class _ExponentialMovingAverage:
    """EMA of a module's parameters, with the usual warm-up of the decay.

    The decay grows as (1 + step) / (10 + step) up to ``max_decay``, so
    short runs are not dominated by the initial weights.
    """

    def __init__(self, module: nn.Module, max_decay: float) -> None:
        self.module = copy.deepcopy(module).requires_grad_(False)
        self.max_decay = max_decay

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        decay = min(self.max_decay, (1 + step) / (10 + step))
        averaged = list(self.module.parameters())
        current = list(module.parameters())
        torch._foreach_lerp_(averaged, current, 1.0 - decay)


# Minibatch OT pairs noise with [y, CONDITION_WEIGHT * x] for conditional
# fields: moving a pair by a tenth of a standardized unit of the condition
# costs as much as a whole unit of y, so pairs stay within close conditions.
CONDITION_WEIGHT = 10.0


def velocity_and_exact_divergence(field, t, z, n_moving):
    """v(t, z) and its exact divergence over the first ``n_moving`` columns,
    with a graph for the weights' gradient: in closed form where the field
    has it (the MLPs, over the columns they move), else one backward per
    column."""
    closed_form = getattr(field, "velocity_and_divergence_with_graph", None)
    moves = getattr(field, "n_targets", z.shape[1])
    if closed_form is not None and n_moving == moves:
        with torch.enable_grad():
            return closed_form(t, z)
    with torch.enable_grad():
        if not z.requires_grad:
            z = z.detach().requires_grad_(True)
        velocity = field(t, z)
        divergence = 0
        for column in range(n_moving):
            (row,) = torch.autograd.grad(
                velocity[:, column].sum(), z, create_graph=True
            )
            divergence = divergence + row[:, column]
    return velocity, divergence


class _Minibatches:
    """Draws ``(t, x_t, u_t)``: weighted rows, noise paired by the path, times.

    Draws are made in float32 whatever the dtype, so that float32 and
    float64 fits with one seed see the same minibatches, times and noise.
    The data may stay on the CPU (too large for an accelerator): then each
    minibatch is gathered there and copied to the weights' device.

    With ``n_targets`` set, a row is ``[y, x]``: only its first
    ``n_targets`` coordinates (y) travel the path, the condition x is
    appended to x_t (plus Gaussian noise of standard deviation
    ``condition_noise``), and u_t is y's velocity alone. Minibatch OT
    then pairs noise and rows by their distance in ``[y, CONDITION_WEIGHT
    x]``, so that noise drawn beside one condition is rarely handed to a
    far-away one (conditional OT, Kerrigan et al., 2024).
    """

    def __init__(
        self,
        path: ProbabilityPath,
        data: torch.Tensor,
        sample_weight: torch.Tensor,
        *,
        batch_size: int,
        generator: torch.Generator,
        dequantize: torch.Tensor | None,
        time_sampling: str,
        time_skew: float,
        n_targets: int | None = None,
        condition_noise: float = 0.0,
    ) -> None:
        self.path, self.data, self.batch_size = path, data, batch_size
        self.condition_noise = condition_noise
        self.n_targets = data.shape[1] if n_targets is None else n_targets
        self.generator, self.dequantize = generator, dequantize
        self.device = sample_weight.device
        self.cumulative_weight = torch.cumsum(sample_weight.to(data.dtype), 0)
        self.total_weight = self.cumulative_weight[-1]
        self.draw_times = TIME_SAMPLERS[time_sampling]
        self.time_skew = time_skew

    def uniform(self, *shape: int) -> torch.Tensor:
        draw = torch.rand(*shape, generator=self.generator, device=self.device)
        return draw.to(self.data.dtype)

    def normal(self, *shape: int) -> torch.Tensor:
        draw = torch.randn(*shape, generator=self.generator, device=self.device)
        return draw.to(self.data.dtype)

    def rows(self) -> torch.Tensor:
        """``batch_size`` rows drawn by weight, dequantized where asked."""
        n, (n_rows, n_features) = self.batch_size, self.data.shape
        rows = torch.searchsorted(
            self.cumulative_weight, self.uniform(n) * self.total_weight, right=True
        ).clamp_(max=n_rows - 1)
        x1 = self.data[rows.to(self.data.device)].to(self.device, non_blocking=True)
        if self.dequantize is not None:
            x1 = x1 + self.uniform(n, n_features) * self.dequantize
        return x1

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x1 = self.rows()
        n, n_features = x1.shape
        k = self.n_targets
        if k == n_features:
            x0 = self.path.couple(self.normal(n, n_features), x1)
            t = self.draw_times(self.uniform, self.normal, n, self.time_skew)
            return t, *self.path.interpolate(x0, x1, t, self.normal(n, n_features))
        y1, condition = x1[:, :k], x1[:, k:]
        if self.condition_noise:
            condition = condition + self.condition_noise * self.normal(
                n, n_features - k
            )
        weighted = CONDITION_WEIGHT * condition
        noise = torch.cat([self.normal(n, k), weighted], dim=1)
        x0 = self.path.couple(noise, torch.cat([y1, weighted], dim=1))[:, :k]
        t = self.draw_times(self.uniform, self.normal, n, self.time_skew)
        y_t, u_t = self.path.interpolate(x0, y1, t, self.normal(n, k))
        return t, torch.cat([y_t, condition], dim=1), u_t


class _Progress:
    """verbose 1: a bar on standard error with the loss, refreshed about 100
    times; 2 and more: a line with the loss about 10 times; 0: silence.
    The loss reaches the host only when shown: one sync per report."""

    def __init__(self, max_iter: int, verbose: int, what: str = "fit") -> None:
        self.max_iter, self.verbose, self.what = max_iter, verbose, what
        self.every = max(1, max_iter // (100 if verbose == 1 else 10))
        self.bar = tqdm(total=max_iter, desc=what, unit="step", disable=verbose != 1)
        self.start = time.perf_counter()

    def update(self, n_steps_done: int, loss: torch.Tensor) -> None:
        self.bar.update()
        if n_steps_done % self.every and n_steps_done != self.max_iter:
            return
        if self.verbose == 1:
            self.bar.set_postfix(loss=f"{loss.item():.4f}")
        elif self.verbose > 1:
            elapsed = time.perf_counter() - self.start
            print(
                f"[skflow] {self.what} step {n_steps_done}/{self.max_iter}, "
                f"loss {loss.item():.4f}, {elapsed:.1f} s",
                flush=True,
            )


def train_vector_field(
    field: nn.Module,
    path: ProbabilityPath,
    data: torch.Tensor,
    sample_weight: torch.Tensor,
    *,
    max_iter: int,
    batch_size: int,
    learning_rate: float,
    generator: torch.Generator,
    dequantize: torch.Tensor | None = None,
    validation_score: Callable[[nn.Module], float] | None = None,
    validation_every: int = 100,
    n_iter_no_change: int | None = None,
    warmup_fraction: float = 0.05,
    ema_decay: float = 0.999,
    time_sampling: str = "power",
    time_skew: float = 0.0,
    gradient_clip_norm: float | None = None,
    n_targets: int | None = None,
    condition_noise: float = 0.0,
    divergence_weight: float = 0.0,
    divergence_rows: int | None = None,
    stop_after: int | None = None,
    what: str = "fit",
    verbose: int = 0,
) -> tuple[nn.Module, list[float], list[float]]:
    """Regress ``field`` on the path's targets by minibatch flow matching.

    Parameters
    ----------
    field : nn.Module
        The network ``field(t, x)``, already on the device and dtype of ``data``.
    path : ProbabilityPath
        Gives x_t and u_t for pairs (noise, data).
    data : tensor of shape (n, d)
        Standardized training data, on the field's device or on the CPU.
    sample_weight : tensor of shape (n,)
        Non-negative weights, on the field's device; rows are drawn with
        probability proportional to them (with replacement), so integer
        weights act like repeats.
    max_iter, batch_size, learning_rate
        Number of optimizer steps, rows per step, peak learning rate.
    generator : torch.Generator
        Source of every random draw of the loop.
    dequantize : tensor of shape (d,), default=None
        Width of the uniform noise added to each column of every minibatch
        (in standardized units; 0 for columns left as they are), or None.
    validation_score : callable, default=None
        ``validation_score(module)``, higher is better: the averaged
        weights are scored every ``validation_every`` steps and at the
        last, and the best ones are returned.
    n_iter_no_change : int, default=None
        Stop when that many validation scores in a row did not improve on
        the best; None trains for ``max_iter`` steps.
    warmup_fraction, ema_decay, time_sampling, time_skew, gradient_clip_norm
        The recipe's constants (see ``skflow._recipe.Recipe``).
    n_targets : int, default=None
        For a conditional field, rows of ``data`` are ``[y, x]`` and y has
        this many columns (see ``_Minibatches``); None: unconditional.
    condition_noise : float, default=0.0
        Standard deviation of the Gaussian noise added to the conditions of
        every minibatch (conditional fields only).
    divergence_weight : float, default=0.0
        Weight of flow-divergence matching's term (the mean squared
        ``path.divergence_residual`` per moving coordinate) added to the
        loss; 0 leaves plain flow matching, and its cost, unchanged.
    divergence_rows : int, default=None
        The term is measured on this many rows of each minibatch (the
        divergence is most of such a step's cost); None: all.
    stop_after : int, default=None
        Take only the first this many steps of the schedule of ``max_iter``
        steps (its learning rate and moving average are those of the
        longer run); None takes them all.
    what : str, default="fit"
        The progress reports' label.
    verbose : int
        Progress reports (see ``_Progress``).

    Returns
    -------
    ema_field : nn.Module
        The exponential moving average of the weights, in eval mode: the
        best validated one if ``validation_score`` is given.
    loss_curve : list of float
        The flow-matching loss of each step taken: shorter than ``max_iter``
        if training was interrupted (``KeyboardInterrupt``) after the first
        step, which stops the loop with a warning and keeps the average so
        far. An interrupt before any step completes propagates.
    validation_scores : list of float
        The validation scores, one per check.

    Raises
    ------
    FloatingPointError
        If the loss or the averaged weights become NaN or infinite, or if
        the field kept does no better than the zero field.
    """
    minibatches = _Minibatches(
        path,
        data,
        sample_weight,
        batch_size=batch_size,
        generator=generator,
        dequantize=dequantize,
        time_sampling=time_sampling,
        time_skew=time_skew,
        n_targets=n_targets,
        condition_noise=condition_noise,
    )
    optimizer = _adam(field.parameters(), learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _learning_rate_factor(max_iter, warmup_fraction)
    )
    ema = _ExponentialMovingAverage(field, ema_decay)
    n_steps = max_iter if stop_after is None else min(stop_after, max_iter)
    # Losses stay on the device until the end: no host sync on every step.
    losses = torch.empty(n_steps, dtype=data.dtype, device=sample_weight.device)
    best = BestWeights(n_iter_no_change)
    progress = _Progress(n_steps, verbose, what)
    field.train()
    n_steps_done = 0
    try:
        for step in range(n_steps):
            t, x_t, u_t = minibatches()
            loss, objective = _losses(
                field, path, t, x_t, u_t, divergence_weight, divergence_rows
            )
            _descend(objective, field, optimizer, gradient_clip_norm)
            scheduler.step()
            ema.update(field, step)
            losses[step] = loss.detach()
            n_steps_done = step + 1

            if n_steps_done % _FINITE_CHECK_EVERY == 0:
                _check_finite_losses(losses[:n_steps_done], learning_rate)
            if validation_score is not None and (
                n_steps_done % validation_every == 0 or n_steps_done == max_iter
            ):
                if best.offer(ema.module, validation_score(ema.module)):
                    break
            progress.update(n_steps_done, loss)
    except KeyboardInterrupt:
        if n_steps_done == 0:
            raise
        warnings.warn(
            f"Training was interrupted after {n_steps_done} of {n_steps} "
            "steps; the model keeps "
            + (
                "the weights early stopping chose before this refit."
                if what == "refit"
                else "the moving average of the weights so far."
            ),
            UserWarning,
            stacklevel=3,
        )
    finally:
        progress.bar.close()
    losses = losses[:n_steps_done]
    _check_finite_losses(losses, learning_rate)
    _check_finite_weights(ema.module, learning_rate)
    if best.state is not None:
        ema.module.load_state_dict(best.state)
    _check_better_than_zero_field(ema.module.eval(), minibatches, learning_rate)
    return ema.module, losses.tolist(), best.scores


def _losses(field, path, t, x_t, u_t, divergence_weight, divergence_rows):
    """The flow-matching loss, and the objective: that loss plus
    flow-divergence matching's term where it is weighted, measured on the
    minibatch's first ``divergence_rows`` rows (all where None).

    The velocity in the divergence residual is detached (as in Huang et
    al.'s code): the term then only moves the divergence, and leaves the
    velocity to the regression.
    """
    k = u_t.shape[1]
    if not divergence_weight:
        loss = (field(t, x_t)[:, :k] - u_t).square().mean()
        return loss, loss
    m = len(x_t) if divergence_rows is None else min(divergence_rows, len(x_t))
    velocity, divergence = velocity_and_exact_divergence(field, t[:m], x_t[:m], k)
    if m < len(x_t):
        velocity = torch.cat([velocity, field(t[m:], x_t[m:])])
    velocity = velocity[:, :k]
    residual = path.divergence_residual(
        t[:m], x_t[:m, :k], u_t[:m], velocity[:m].detach(), divergence
    )
    loss = (velocity - u_t).square().mean()
    return loss, loss + divergence_weight * residual.square().mean() / k


def _descend(
    loss: torch.Tensor,
    field: nn.Module,
    optimizer: torch.optim.Optimizer,
    gradient_clip_norm: float | None,
) -> None:
    """One optimizer step down the gradient of ``loss``, clipped if asked."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if gradient_clip_norm is not None:
        nn.utils.clip_grad_norm_(field.parameters(), gradient_clip_norm)
    optimizer.step()


def _check_finite_losses(losses: torch.Tensor, learning_rate: float) -> None:
    finite = torch.isfinite(losses)
    if not finite.all():
        step = int(torch.nonzero(~finite)[0]) + 1
        value = float(losses[step - 1])
        raise FloatingPointError(
            diverged_message(
                f"the loss ({value}) at step {step} is not finite", learning_rate
            )
        )


def _check_finite_weights(module: nn.Module, learning_rate: float) -> None:
    if not all(torch.isfinite(p).all() for p in module.parameters()):
        raise FloatingPointError(
            diverged_message("the averaged weights are not finite", learning_rate)
        )


# The kept field must beat the zero field, v = 0, whose flow-matching loss is
# the mean squared target, by this factor at least. Untrained networks sit
# just above 1 and trained ones well below; runs that diverged without
# overflowing land far above (benchmarks/results/divergence_checks.md).
ZERO_FIELD_LOSS_RATIO = 1.5
_CHECK_BATCHES = 4


@torch.no_grad()
def _check_better_than_zero_field(
    field: nn.Module, minibatches: _Minibatches, learning_rate: float
) -> None:
    """Raise where the field's loss on fresh minibatches is no better than
    the zero field's: training diverged, even if every number is finite."""
    loss = target = 0.0
    for _ in range(_CHECK_BATCHES):
        t, x_t, u_t = minibatches()
        loss += float((field(t, x_t)[:, : u_t.shape[1]] - u_t).square().mean())
        target += float(u_t.square().mean())
    if not loss <= ZERO_FIELD_LOSS_RATIO * target:
        raise FloatingPointError(
            diverged_message(
                f"the trained field's flow-matching loss ({loss / _CHECK_BATCHES:.4g}"
                ") is far above the zero field's "
                f"({target / _CHECK_BATCHES:.4g}, the mean squared target)",
                learning_rate,
            )
        )


def diverged_message(what: str, learning_rate: float) -> str:
    """The error of a fit that diverged: ``what`` says how it shows."""
    return (
        f"Training diverged: {what}, so no model was stored "
        "(a model fitted before keeps its weights). Try a lower "
        f"learning_rate (now {learning_rate:g}), dtype='float64', or look "
        "for extreme values in X: every column is standardized, but a few "
        "huge values still squeeze the others together."
    )
