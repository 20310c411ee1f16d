"""ODE solves on torchdiffeq: sampling and exact log-likelihoods.

Sampling integrates dx/dt = v(t, x) from noise (t = 0) to data (t = 1).
The log-likelihood integrates the augmented state (x, delta) backwards from
t = 1 to t = 0 with d delta / dt = div v(t, x) (the instantaneous change of
variables), so that log p_1(x1) = log p_0(x(0)) + delta(0).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchdiffeq import odeint

__all__ = [
    "ADAPTIVE_SOLVERS",
    "FIXED_STEP_SOLVERS",
    "SOLVERS",
    "DIVERGENCES",
    "check_solver",
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
SOLVERS = ADAPTIVE_SOLVERS | FIXED_STEP_SOLVERS
DIVERGENCES = frozenset({"exact", "hutchinson"})


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


class _CountingField:
    """Wrap a right-hand side and count its evaluations."""

    def __init__(self, func: Callable) -> None:
        self.func = func
        self.n_evaluations = 0

    def __call__(self, t, state):
        self.n_evaluations += 1
        return self.func(t, state)


@torch.no_grad()
def integrate(
    field: Field,
    x0: torch.Tensor,
    *,
    solver: str = "dopri5",
    n_steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> tuple[torch.Tensor, int]:
    """Push ``x0`` from t = 0 to t = 1 along ``field`` (no divergence).

    Returns the points at t = 1 and the number of evaluations of the field.
    """
    kwargs = _odeint_kwargs(solver, n_steps, rtol, atol)
    counting = _CountingField(field)
    x1 = odeint(counting, x0, _times(0.0, 1.0, x0), **kwargs)[-1]
    return x1, counting.n_evaluations


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
    """``(t, x) -> (v, div v)``: the field's closed form if it has one."""
    closed_form = getattr(field, "velocity_and_divergence", None)
    if closed_form is not None:
        workspace = {}  # scratch buffers shared by the evaluations of a solve
        return lambda t, x: closed_form(t, x, probes, workspace)

    def by_autograd(t, x):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = field(t, x)
            if probes is None:
                divergence = exact_divergence(v, x)
            else:
                divergence = hutchinson_divergence(v, x, probes)
        return v.detach(), divergence.detach()

    return by_autograd


def log_likelihood(
    field: Field,
    x1: torch.Tensor,
    log_base_density: Callable[[torch.Tensor], torch.Tensor],
    *,
    solver: str = "dopri5",
    n_steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    probes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Log density of each row of ``x1`` under the flow of ``field``.

    Parameters
    ----------
    field : callable
        ``field(t, x)`` returning the velocity at ``x``. If it has a method
        ``velocity_and_divergence(t, x, probes)`` (as
        :class:`skflow.nets.VectorField`), that closed form is used;
        otherwise the divergence is taken by autograd.
    x1 : tensor of shape (n, d)
        Points at t = 1 (data space of the flow).
    log_base_density : callable
        Log density of the t = 0 marginal, applied to rows.
    solver, n_steps, rtol, atol
        torchdiffeq method and its step control.
    probes : tensor of shape (n, n_probes, d), default=None
        Hutchinson probes, fixed for the whole solve; None for the exact
        divergence.

    Returns
    -------
    log_density : tensor of shape (n,)
    n_evaluations : int
        Number of evaluations of the augmented right-hand side.
    """
    kwargs = _odeint_kwargs(solver, n_steps, rtol, atol)
    velocity_and_divergence = _velocity_and_divergence(field, probes)

    def augmented(t, state):
        return velocity_and_divergence(t, state[0])

    counting = _CountingField(augmented)
    delta1 = torch.zeros(x1.shape[0], dtype=x1.dtype, device=x1.device)
    with torch.no_grad():
        x0, delta0 = odeint(counting, (x1, delta1), _times(1.0, 0.0, x1), **kwargs)
        log_density = log_base_density(x0[-1]) + delta0[-1]
    return log_density, counting.n_evaluations
