"""Dormand-Prince 5(4) with a step size of its own for every row.

torchdiffeq's adaptive solvers take one step size for the whole batch: the
hardest row sets the steps of all, and a row's result moves with its batch
mates. Here each row is an independent initial value problem that only
shares the network's evaluations with the others: every row keeps its own
time, step size and error estimate, rows that reach the end leave the batch,
and a row's result depends on that row alone (up to the round-off of the
batched matrix products).

The error of a step is measured by a norm the caller chooses per row, so the
likelihood engine can control the error of the log density itself rather
than only that of the state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["DenseOutput", "solve_each_row"]

# Dormand & Prince (1980): nodes, stages, 5th-order weights (the last stage is
# the first of the next step) and the 5th minus the embedded 4th-order weights.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_ERROR = (
    35 / 384 - 5179 / 57600,
    0.0,
    500 / 1113 - 7571 / 16695,
    125 / 192 - 393 / 640,
    -2187 / 6784 + 92097 / 339200,
    11 / 84 - 187 / 2100,
    -1 / 40,
)

# The continuous extension of order 4 (Hairer, Norsett & Wanner, II.6;
# their dopri5.f): the 5th polynomial coefficient is h * sum_i D_i k_i.
_DENSE = (
    -12715105075 / 11282082432,
    0.0,
    87487479700 / 32700410799,
    -10690763975 / 1880347072,
    701980252875 / 199316789632,
    -1453857185 / 822651844,
    69997945 / 29380423,
)

# Step-size control (Hairer, Norsett & Wanner, II.4): the new step is the old
# one times SAFETY * error^(-1/5), kept within [MIN_FACTOR, MAX_FACTOR].
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0


def solve_each_row(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    error_ratio: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    first_step: float,
    max_steps: int,
    dense: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, DenseOutput | None]:
    """Integrate dy/ds = func(s, y) from s = 0 to s = 1, each row on its own.

    Parameters
    ----------
    func : callable
        ``func(rows, s, y)``: ``rows`` (k,) the indices of the rows being
        stepped (into ``y0``), ``s`` of shape (k,) their times and ``y`` of
        shape (k, m) their states; returns dy/ds of shape (k, m).
    y0 : tensor of shape (n, m)
        Initial states.
    error_ratio : callable
        ``error_ratio(error, y_old, y_new)`` -> (n,): each row's estimated
        local error over its tolerance; a step is accepted where it is <= 1.
    first_step : float
        The first step size tried (the same for every row).
    max_steps : int
        Steps (accepted or rejected) a row may take before it is given up.
    dense : bool, default=False
        Keep what the accepted steps need to give each row's state at any
        time in between (:class:`DenseOutput`).

    Returns
    -------
    y1 : tensor of shape (n, m)
        States at s = 1 (rows given up keep their last accepted state).
    n_evaluations : tensor of shape (n,), int64
        Evaluations of ``func`` spent on each row.
    failed : tensor of shape (n,), bool
        Rows given up: too many steps, a step size that underflowed, or a
        state that is not finite.
    dense_output : DenseOutput or None
        The states between the steps, if ``dense``.
    """
    n = y0.shape[0]
    device = y0.device
    y = y0.clone()
    s = torch.zeros(n, dtype=torch.float64, device=device)
    h = torch.full((n,), float(first_step), dtype=torch.float64, device=device)
    n_evaluations = torch.zeros(n, dtype=torch.int64, device=device)
    n_steps = torch.zeros(n, dtype=torch.int64, device=device)
    failed = torch.zeros(n, dtype=torch.bool, device=device)
    active = torch.arange(n, device=device)
    k_first = func(active, s.to(y.dtype), y)  # first stage, kept between steps (FSAL)
    n_evaluations += 1
    steps = [] if dense else None
    while active.numel():
        y_a, s_a, k1 = y[active], s[active], k_first[active]
        # The last step lands exactly on s = 1.
        h_a = torch.minimum(h[active], 1.0 - s_a)
        h_col = h_a.to(y.dtype).unsqueeze(1)
        stages = [k1]
        for c, a in zip(_C[1:], _A[1:], strict=True):
            increment = sum(weight * k for weight, k in zip(a, stages, strict=False))
            stages.append(
                func(active, (s_a + c * h_a).to(y.dtype), y_a + h_col * increment)
            )
        y_new = y_a + h_col * sum(b * k for b, k in zip(_B, stages, strict=True))
        k_last = func(active, (s_a + h_a).to(y.dtype), y_new)
        stages.append(k_last)
        error = h_col * sum(e * k for e, k in zip(_ERROR, stages, strict=True))
        n_evaluations[active] += 6
        n_steps[active] += 1

        ratio = error_ratio(error, y_a, y_new).to(torch.float64)
        finite = torch.isfinite(y_new).all(1) & torch.isfinite(ratio)
        accept = finite & (ratio <= 1.0)
        factor = SAFETY * ratio.clamp_min(1e-10) ** -0.2
        factor = torch.where(
            accept, factor.clamp(MIN_FACTOR, MAX_FACTOR), factor.clamp(MIN_FACTOR, 1.0)
        )
        factor = torch.where(finite, factor, MIN_FACTOR)

        accepted = active[accept]
        if dense:
            coefficients = _polynomial(
                y_a[accept], y_new[accept], h_col[accept], stages, accept
            )
            steps.append((accepted, s_a[accept], h_a[accept], *coefficients))
        y[accepted] = y_new[accept]
        k_first[accepted] = k_last[accept]
        s_next = torch.where(accept, s_a + h_a, s_a)
        # Land on 1 exactly when within round-off of it.
        s_next = torch.where(1.0 - s_next <= 1e-12, 1.0, s_next)
        s[active] = s_next
        h[active] = h_a * factor

        gave_up = ~accept & (h[active] <= 1e-10)
        gave_up |= (n_steps[active] >= max_steps) & (s_next < 1.0)
        failed[active[gave_up]] = True
        done = (s_next >= 1.0) | gave_up
        active = active[~done]
    return y, n_evaluations, failed, DenseOutput(steps, y0) if dense else None


def _polynomial(y0, y1, h, stages, accept):
    """The continuous extension's coefficients on the accepted steps:
    y(s0 + theta h) = r1 + theta (r2 + (1 - theta) (r3 + theta (r4 +
    (1 - theta) r5)))."""
    k_first, k_last = stages[0][accept], stages[-1][accept]
    difference = y1 - y0
    r3 = h * k_first - difference
    r4 = difference - h * k_last - r3
    r5 = h * sum(weight * k[accept] for weight, k in zip(_DENSE, stages, strict=True))
    return (y0, difference, r3, r4, r5)


class DenseOutput:
    """Each row's state at any time of [0, 1], from its accepted steps.

    ``dense(rows, times)`` gives, for the rows ``rows`` (k,) (indices into
    the solve's ``y0``, repeats allowed) the states (k, m) at ``times`` (k,)
    by the order-4 continuous extension of the step that holds each time.
    """

    def __init__(self, steps: list[tuple], y0: torch.Tensor) -> None:
        if not steps:  # no accepted step: every row failed, or there are none
            index = torch.zeros(1, dtype=torch.int64, device=y0.device)
            zeros = y0.new_zeros((1, y0.shape[1]))
            steps = [(index, index.double(), index.double() + 1) + (zeros,) * 5]
        rows, starts, sizes, *coefficients = (
            torch.cat(column) for column in zip(*steps, strict=True)
        )
        # Sort the steps by row, then by start: row + start orders them
        # (starts lie in [0, 1)), and a search finds each time's step.
        order = torch.argsort(rows.double() + starts)
        self.rows, self.starts, self.sizes = rows[order], starts[order], sizes[order]
        self.keys = self.rows.double() + self.starts
        self.coefficients = [c[order] for c in coefficients]

    def __call__(self, rows: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        times = times.double()
        # The last step of the row that starts before the time (the row's
        # first step for a time of 0).
        step = torch.searchsorted(self.keys, rows.double() + times) - 1
        step = step.clamp_min(0)
        step = torch.where(self.rows[step] == rows, step, step + 1)
        theta = ((times - self.starts[step]) / self.sizes[step]).clamp(0.0, 1.0)
        theta = theta.to(self.coefficients[0].dtype).unsqueeze(1)
        r1, r2, r3, r4, r5 = (c[step] for c in self.coefficients)
        return r1 + theta * (r2 + (1 - theta) * (r3 + theta * (r4 + (1 - theta) * r5)))
