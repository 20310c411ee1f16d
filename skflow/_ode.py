"""ODE solves on torchdiffeq: sampling and exact log-likelihoods.

Sampling integrates dx/dt = v(t, x) from noise (t = 0) to data (t = 1).
The log-likelihood is the instantaneous change of variables,

    log p_1(x1) = log p_0(x(0)) - integral_0^1 div v(t, x(t)) dt,

along the trajectory x(t) through x1. Two ways to compute it:

- ``"augmented"``: integrate the state (x, delta) from t = 1 to t = 0 with
  d delta / dt = div v (the textbook method; every solver step pays for the
  divergence at every stage);
- ``"quadrature"``: solve the trajectory alone (velocity only, (d + 1)
  times cheaper per evaluation), keep x(t) at Gauss-Kronrod nodes, and
  integrate the divergence there by adaptive quadrature. The trajectory is
  as accurate as the augmented solve's, and the divergence is evaluated at
  the quadrature's nodes only, far fewer than the solver's stages (the
  counts are in docs/user_guide.md, "How scores are computed").

Both run on torchdiffeq, whose steps are shared by the rows of a solve. With
the solver ``"dopri5-rowwise"`` (:mod:`skflow._rowwise`) every row takes
steps of its own instead, chosen from that row's error alone, so rows are
solved independently: its quadrature gives every row panels of its own too
(the states at the nodes from the solver's continuous extension), and its
augmented solve controls the error of each row's log density as well as of
its state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchdiffeq import odeint

from ._quadrature import integrate_panels, integrate_panels_per_row
from ._rowwise import solve_each_row

__all__ = [
    "ADAPTIVE_SOLVERS",
    "FIXED_STEP_SOLVERS",
    "ROWWISE_SOLVERS",
    "SOLVERS",
    "DIVERGENCES",
    "LIKELIHOOD_METHODS",
    "SolveStats",
    "SolveFailedError",
    "MAX_EVALUATIONS",
    "check_solver",
    "quadrature_slack",
    "integrate",
    "log_likelihood",
    "exact_divergence",
    "hutchinson_divergence",
]

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

ADAPTIVE_SOLVERS = frozenset(
    {"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"}
)
FIXED_STEP_SOLVERS = frozenset({"euler", "midpoint", "heun3", "rk4"})
ROWWISE_SOLVERS = frozenset({"dopri5-rowwise"})
SOLVERS = ADAPTIVE_SOLVERS | FIXED_STEP_SOLVERS | ROWWISE_SOLVERS
DIVERGENCES = frozenset({"exact", "hutchinson"})
LIKELIHOOD_METHODS = frozenset({"auto", "augmented", "quadrature"})

# A panel of the divergence quadrature is accepted when |Kronrod 15 -
# Gauss 7| (the rows' RMS of it where rows share panels) is below a slack
# times the solver tolerance (atol + rtol |integral|, per unit of time).
# That difference estimates the 7-point rule's error, while the 15-point
# result kept is far more accurate on these smooth integrands. From
# SLACK_FROM_FEATURES moving features on, the looser slack lets most rows
# stop at the first two panels, where nodes are dear (d + 1 passes each),
# within issue 18's error targets; in 2-D, where nodes are cheap, it let
# rare rows miss them, so fewer features keep the tighter one (the slack's
# speed and its errors, rare ones included, are in
# benchmarks/results/quadrature_tolerance.md).
QUADRATURE_SLACK = 3_000.0
LOW_DIMENSIONAL_QUADRATURE_SLACK = 1_000.0
SLACK_FROM_FEATURES = 16


def quadrature_slack(n_features: int) -> float:
    """The quadrature's slack for a state with n_features moving coordinates."""
    if n_features >= SLACK_FROM_FEATURES:
        return QUADRATURE_SLACK
    return LOW_DIMENSIONAL_QUADRATURE_SLACK


# An adaptive solve that needs more field evaluations than this gives up with
# a SolveFailedError instead of running on: far more than trained fields need,
# near the data or far from it (benchmarks/results/far_away_points.md).
MAX_EVALUATIONS = 10_000


class SolveFailedError(RuntimeError):
    """An adaptive solve gave up: too many steps, or a step size underflow.

    Both come from a state that is not finite or a field too stiff for the
    tolerance.
    """


def check_solver(solver: str, n_steps: int | None) -> None:
    """Raise a ValueError for an unknown solver or a fixed-step one without steps."""
    if solver not in SOLVERS:
        raise ValueError(f"Unknown solver {solver!r}; choose one of {sorted(SOLVERS)}.")
    if solver in FIXED_STEP_SOLVERS and n_steps is None:
        # torchdiffeq would take one step from t0 to t1: never do that silently.
        raise ValueError(
            f"solver={solver!r} takes fixed steps: set n_steps (e.g. n_steps=32)."
        )


def _odeint_kwargs(solver: str, n_steps: int | None, rtol: float, atol: float) -> dict:
    """torchdiffeq arguments for one solve between two times."""
    check_solver(solver, n_steps)
    if solver in ADAPTIVE_SOLVERS:
        return {"method": solver, "rtol": rtol, "atol": atol}

    def uniform_grid(func, y0, t):
        return torch.linspace(t[0], t[-1], n_steps + 1, dtype=t.dtype, device=t.device)

    return {"method": solver, "options": {"grid_constructor": uniform_grid}}


def _times(start: float, end: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([start, end], dtype=like.dtype, device=like.device)


@dataclass(frozen=True)
class SolveStats:
    """The work of one solve.

    Attributes
    ----------
    n_evaluations : int
        Evaluations of the field, with or without its divergence (for the
        rowwise solver, whose rows take steps of their own: those of its
        slowest row).
    n_divergence_evaluations : int
        Those of them that computed the divergence too (the costly kind: an
        exact divergence costs about d + 1 plain evaluations).
    n_rows : int
        Rows solved.
    n_row_evaluations : int
        Evaluations summed over the rows each covered: ``n_evaluations *
        n_rows`` when the rows share their steps, less when each row takes
        its own (``"dopri5-rowwise"``, whose rows leave the batch as they
        finish).
    n_row_divergence_evaluations : int
        Those of them with the divergence, summed the same way.
    """

    n_evaluations: int
    n_divergence_evaluations: int = 0
    n_rows: int = 0
    n_row_evaluations: int = 0
    n_row_divergence_evaluations: int = 0


class _CountingField:
    """Wrap a right-hand side, count its evaluations and enforce a budget."""

    def __init__(self, func: Callable, max_evaluations: float = float("inf")) -> None:
        self.func = func
        self.n_evaluations = 0
        self.max_evaluations = max_evaluations

    def __call__(self, t, state):
        if self.n_evaluations >= self.max_evaluations:
            raise SolveFailedError(
                f"The ODE solver gave up after {self.n_evaluations} evaluations "
                "of the field (the state may have left the float range, or "
                "rtol/atol are too tight for this field)."
            )
        self.n_evaluations += 1
        return self.func(t, state)


def _odeint(counting: _CountingField, y0, times, **kwargs):
    """torchdiffeq's odeint, with its step-size underflow as SolveFailedError."""
    try:
        return odeint(counting, y0, times, **kwargs)
    except AssertionError as exc:  # torchdiffeq asserts that dt > 0
        raise SolveFailedError(f"The ODE solver failed: {exc}.") from exc


def _budget(solver: str, max_evaluations: int) -> float:
    # Fixed-step solvers take the n_steps they are given, no more.
    return max_evaluations if solver in ADAPTIVE_SOLVERS else float("inf")


@torch.no_grad()
def integrate(
    field: Field,
    x0: torch.Tensor,
    *,
    solver: str = "dopri5",
    n_steps: int | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    max_evaluations: int = MAX_EVALUATIONS,
) -> tuple[torch.Tensor, SolveStats]:
    """Push ``x0`` from t = 0 to t = 1 along ``field`` (no divergence).

    Returns the points at t = 1 and the solve's :class:`SolveStats`. An
    adaptive solve raises :class:`SolveFailedError` after
    ``max_evaluations`` evaluations of the field.
    """
    if solver in ROWWISE_SOLVERS:
        return _integrate_rowwise(field, x0, rtol, atol, max_evaluations)
    kwargs = _odeint_kwargs(solver, n_steps, rtol, atol)
    counting = _CountingField(field, _budget(solver, max_evaluations))
    x1 = _odeint(counting, x0, _times(0.0, 1.0, x0), **kwargs)[-1]
    n = x0.shape[0]
    return x1, SolveStats(counting.n_evaluations, 0, n, counting.n_evaluations * n)


def exact_divergence(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Trace of dv/dx for each row, by d vector-Jacobian products in one call.

    For fields without a closed form; ``v`` must have been computed from
    ``x`` with autograd recording.
    """
    n_features = x.shape[-1]
    basis = torch.eye(n_features, dtype=x.dtype, device=x.device)
    basis = basis[:, None, :].expand(n_features, x.shape[0], n_features)
    (rows,) = torch.autograd.grad(v, x, basis, is_grads_batched=True)
    # rows[i, n, j] = d v_i / d x_j at row n: the trace is the diagonal's sum.
    return torch.einsum("ini->n", rows)


def hutchinson_divergence(
    v: torch.Tensor, x: torch.Tensor, probes: torch.Tensor
) -> torch.Tensor:
    """Unbiased estimate of the trace of dv/dx, averaged over ``probes``.

    ``probes`` has shape (n, n_probes, d): mean_k eps_k^T (dv/dx) eps_k.
    """
    by_probe = probes.movedim(1, 0)
    (products,) = torch.autograd.grad(v, x, by_probe, is_grads_batched=True)
    return (products * by_probe).sum(-1).mean(0)


def _velocity_and_divergence(field: Field, probes: torch.Tensor | None) -> Callable:
    """``(t, x[, probes]) -> (v, div v)``: the field's closed form if it has
    one. ``probes`` replaces the solve's (the rowwise solver passes those of
    the rows it steps)."""
    closed_form = getattr(field, "velocity_and_divergence", None)
    if closed_form is not None:
        workspace = {}  # scratch buffers shared by the evaluations of a solve
        return lambda t, x, some_probes=probes: closed_form(
            t, x, some_probes, workspace
        )

    def by_autograd(t, x, some_probes=probes):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = field(t, x)
            if some_probes is None:
                divergence = exact_divergence(v, x)
            else:
                divergence = hutchinson_divergence(v, x, some_probes)
        return v.detach(), divergence.detach()

    return by_autograd


def log_likelihood(
    field: Field,
    x1: torch.Tensor,
    log_base_density: Callable[[torch.Tensor], torch.Tensor],
    *,
    solver: str = "dopri5",
    n_steps: int | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    probes: torch.Tensor | None = None,
    method: str = "auto",
    max_evaluations: int = MAX_EVALUATIONS,
) -> tuple[torch.Tensor, SolveStats]:
    """Log density of each row of ``x1`` under the flow of ``field``.

    Parameters
    ----------
    field : callable
        ``field(t, x)`` returning the velocity at ``x``. If it has a method
        ``velocity_and_divergence(t, x, probes, workspace)`` (as
        :class:`skflow._nets.VectorField`), that closed form is used for the
        divergence; otherwise the divergence is taken by autograd.
    x1 : tensor of shape (n, d)
        Points at t = 1 (data space of the flow).
    log_base_density : callable
        Log density of the t = 0 marginal, applied to rows.
    solver, n_steps, rtol, atol
        torchdiffeq method and its step control.
    probes : tensor of shape (n, n_probes, d), default=None
        Hutchinson probes, fixed for the whole solve; None for the exact
        divergence.
    method : {"auto", "augmented", "quadrature"}, default="auto"
        How the divergence is integrated (see the module's docstring).
        ``"auto"``: quadrature with adaptive solvers (the rowwise one
        included), augmented with fixed-step ones (which then score each
        row on its own).
    max_evaluations : int, default=MAX_EVALUATIONS
        Budget of field evaluations of an adaptive solve.

    Returns
    -------
    log_density : tensor of shape (n,), float64
        The base density is evaluated in float64, so points far out in its
        tail get a finite log density even in float32.
    stats : SolveStats
        Evaluations of the field, and how many of them had the divergence.

    Raises
    ------
    SolveFailedError
        If an adaptive solve exceeds ``max_evaluations`` or its step size
        underflows (a state that is not finite, or a field too stiff).
    """
    check_solver(solver, n_steps)
    if method not in LIKELIHOOD_METHODS:
        raise ValueError(
            f"Unknown method {method!r}; use {sorted(LIKELIHOOD_METHODS)}."
        )
    if solver in ROWWISE_SOLVERS:
        rowwise = (
            _log_likelihood_rowwise_augmented
            if method == "augmented"
            else _log_likelihood_rowwise_quadrature
        )
        return rowwise(field, x1, log_base_density, rtol, atol, probes, max_evaluations)
    if method == "auto":
        method = "quadrature" if solver in ADAPTIVE_SOLVERS else "augmented"
    if method == "quadrature" and solver not in ADAPTIVE_SOLVERS:
        # Fixed-step solvers interpolate linearly between their steps: far
        # too coarse for the quadrature nodes.
        raise ValueError(
            f"method='quadrature' needs an adaptive solver, not {solver!r}."
        )
    solve = (
        _log_likelihood_by_quadrature
        if method == "quadrature"
        else _log_likelihood_augmented
    )
    kwargs = _odeint_kwargs(solver, n_steps, rtol, atol)
    budget = _budget(solver, max_evaluations)
    x0, integral, stats = solve(field, x1, kwargs, rtol, atol, probes, budget)
    log_density = log_base_density(x0.double()) - integral.double()
    return log_density, stats


# The first step each row tries: the controller adapts it within a few steps.
_FIRST_STEP = 0.05


def _state_error_ratio(rtol: float, atol: float, n_features=None) -> Callable:
    """Each row's error over its tolerance: an RMS over the state's first
    ``n_features`` coordinates (all if None), and where the state goes on
    (the log density, a condition), the larger of that and the rest's largest."""

    def error_ratio(error, y_old, y_new):
        scaled = error / (atol + rtol * torch.maximum(y_old.abs(), y_new.abs()))
        ratio = scaled[:, :n_features].square().mean(1).sqrt()
        if n_features is not None:
            ratio = torch.maximum(ratio, scaled[:, n_features:].abs().amax(1))
        return ratio

    return error_ratio


def _n_moving(field) -> int | None:
    """The state's first coordinates that move: a conditional field's
    targets (its conditions ride along with velocity 0, so counting them
    in the RMS would loosen the tolerance); None for all."""
    return getattr(field, "n_targets", None)


def _log_likelihood_rowwise_quadrature(
    field, x1, log_base_density, rtol, atol, probes, budget
):
    """Each row's trajectory with its own steps, and the divergence along it
    by quadrature on panels of its own (the states at the nodes come from
    the solver's continuous extension).

    Rows the solver gave up on get a NaN log density.
    """
    n = x1.shape[0]
    velocity_and_divergence = _velocity_and_divergence(field, probes)
    slack = quadrature_slack(_n_moving(field) or x1.shape[1])
    with torch.no_grad():
        x0, n_trajectory, failed, dense = solve_each_row(
            lambda rows, s, x: -field(1 - s, x),
            x1,
            _state_error_ratio(rtol, atol, _n_moving(field)),
            first_step=_FIRST_STEP,
            max_steps=max(1, budget // 6),
            dense=True,
        )
        solved = torch.nonzero(~failed).squeeze(1)

        def divergences(rows, times):
            # At most n points at a time: the memory the caller sized the call for.
            values = torch.empty(len(rows), dtype=x1.dtype, device=x1.device)
            for start in range(0, len(rows), max(n, 1)):
                part = slice(start, start + n)
                row, t = solved[rows[part]], times[part]
                chosen = None if probes is None else probes[row]
                x = dense(row, 1 - t)
                values[part] = velocity_and_divergence(t.to(x.dtype), x, chosen)[1]
            return values

        integral, converged, n_nodes = integrate_panels_per_row(
            divergences,
            len(solved),
            edges=[0.0, 0.5, 1.0],
            tolerance=lambda kronrod: slack * (atol + rtol * kronrod.abs()),
            device=x1.device,
        )
    if not converged.all():
        warnings.warn(
            f"The divergence quadrature of {int((~converged).sum())} row(s) did "
            "not reach the tolerance; their log densities may be less accurate "
            "than rtol/atol ask.",
            RuntimeWarning,
            stacklevel=3,
        )
    log_density = torch.full((n,), float("nan"), dtype=torch.float64, device=x1.device)
    log_density[solved] = log_base_density(x0[solved].double()) - integral
    n_divergences = torch.zeros_like(n_trajectory)
    n_divergences[solved] = n_nodes
    per_row = n_trajectory + n_divergences
    most = int(per_row.max()) if n else 0
    return log_density, SolveStats(
        most,
        int(n_divergences.max()) if n else 0,
        n,
        int(per_row.sum()),
        int(n_divergences.sum()),
    )


def _log_likelihood_rowwise_augmented(
    field, x1, log_base_density, rtol, atol, probes, budget
):
    """The augmented state (x, delta) from t = 1 to t = 0, each row with its
    own steps (s = 1 - t runs from 0 to 1).

    Rows the solver gave up on get a NaN log density.
    """
    n, d = x1.shape
    velocity_and_divergence = _velocity_and_divergence(field, probes)

    def func(rows, s, state):
        chosen = None if probes is None else probes[rows]
        v, divergence = velocity_and_divergence(1 - s, state[:, :d], chosen)
        return torch.cat([-v, divergence.unsqueeze(1)], dim=1)

    start = torch.cat([x1, x1.new_zeros(n, 1)], dim=1)
    with torch.no_grad():
        end, n_evaluations, failed, _ = solve_each_row(
            func,
            start,
            _state_error_ratio(rtol, atol, _n_moving(field) or d),
            first_step=_FIRST_STEP,
            max_steps=max(1, budget // 6),
        )
    log_density = log_base_density(end[:, :d].double()) - end[:, d].double()
    log_density[failed] = float("nan")
    row_evaluations = int(n_evaluations.sum())
    most = int(n_evaluations.max()) if n else 0
    return log_density, SolveStats(most, most, n, row_evaluations, row_evaluations)


@torch.no_grad()
def _integrate_rowwise(field, x0, rtol, atol, budget):
    """``x0`` from t = 0 to t = 1, each row with its own steps."""

    x1, n_evaluations, failed, _ = solve_each_row(
        lambda rows, t, x: field(t, x),
        x0,
        _state_error_ratio(rtol, atol, _n_moving(field)),
        first_step=_FIRST_STEP,
        max_steps=max(1, budget // 6),
    )
    if failed.any():
        raise SolveFailedError(
            f"The dopri5-rowwise solver gave up on {int(failed.sum())} row(s) "
            "(too many steps, or a state that is not finite)."
        )
    most = int(n_evaluations.max()) if len(x0) else 0
    return x1, SolveStats(most, 0, len(x0), int(n_evaluations.sum()))


def _log_likelihood_augmented(field, x1, kwargs, rtol, atol, probes, budget):
    """Integrate (x, delta) from t = 1 to t = 0 with d delta / dt = div v.

    Returns x(0), the integral of the divergence from 0 to 1, and the stats.
    """
    velocity_and_divergence = _velocity_and_divergence(field, probes)
    counting = _CountingField(
        lambda t, state: velocity_and_divergence(t, state[0]), budget
    )
    delta1 = torch.zeros(x1.shape[0], dtype=x1.dtype, device=x1.device)
    with torch.no_grad():
        x0, delta0 = _odeint(counting, (x1, delta1), _times(1.0, 0.0, x1), **kwargs)
    n, count = x1.shape[0], counting.n_evaluations
    stats = SolveStats(count, count, n, count * n, count * n)
    return x0[-1], -delta0[-1], stats


def _log_likelihood_by_quadrature(field, x1, kwargs, rtol, atol, probes, budget):
    """Solve the trajectory alone; integrate the divergence by quadrature."""
    velocity_and_divergence = _velocity_and_divergence(field, probes)
    slack = quadrature_slack(_n_moving(field) or x1.shape[1])
    counting = _CountingField(field, budget)
    trajectory: dict[float, torch.Tensor] = {}
    n_divergences = 0

    def prepare(needed, ahead=()):
        # One solve from t = 1 gives x at every time asked for (torchdiffeq
        # interpolates between the steps it chooses from rtol/atol); solve
        # again only when a needed time is missing, and then take the times
        # the next rounds may need along.
        if all(t in trajectory for t in needed):
            return
        wanted = {t for t in (*needed, *ahead, 0.0) if t not in trajectory}
        wanted = sorted(wanted, reverse=True)
        grid = torch.tensor([1.0, *wanted], dtype=x1.dtype, device=x1.device)
        with torch.no_grad():
            path = _odeint(counting, x1, grid, **kwargs)
        trajectory.update(zip(wanted, path[1:], strict=True))

    def divergences(times):
        nonlocal n_divergences
        prepare(times)
        n_divergences += len(times)
        return torch.stack(
            [velocity_and_divergence(x1.new_tensor(t), trajectory[t])[1] for t in times]
        )

    def tolerance(integral):
        return slack * (atol + rtol * integral.abs())

    integral, converged = integrate_panels(
        divergences, edges=[0.0, 0.5, 1.0], tolerance=tolerance, prepare=prepare
    )
    if not converged:
        warnings.warn(
            "The divergence quadrature did not reach the tolerance; the log "
            "densities may be less accurate than rtol/atol ask.",
            RuntimeWarning,
            stacklevel=3,
        )
    prepare([0.0])
    n, n_evaluations = x1.shape[0], counting.n_evaluations + n_divergences
    stats = SolveStats(
        n_evaluations, n_divergences, n, n_evaluations * n, n_divergences * n
    )
    return trajectory[0.0], integral, stats
