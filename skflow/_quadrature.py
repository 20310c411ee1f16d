"""Adaptive Gauss-Kronrod quadrature of many integrands over shared panels.

Used by the likelihood engine to integrate the divergence of the field along
each row's trajectory: every row is an integrand, and a panel is split in two
until the error estimates meet the tolerance: the rows' RMS of them where
all rows share their panels (:func:`integrate_panels`), each row's own where
every row has panels of its own (:func:`integrate_panels_per_row`). The
7-point Gauss / 15-point Kronrod pair is QUADPACK's ``qk15``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["GaussKronrod15", "integrate_panels", "integrate_panels_per_row"]

# Nodes in [0, 1] (positive half, QUADPACK qk15); the rule is symmetric.
_HALF_NODES = np.array(
    [
        0.991455371120812639206854697526329,
        0.949107912342758524526189684047851,
        0.864864423359769072789712788640926,
        0.741531185599394439863864773280788,
        0.586087235467691130294144845693013,
        0.405845151377397166906606412076961,
        0.207784955007898467600689403773245,
        0.0,
    ]
)
_HALF_KRONROD = np.array(
    [
        0.022935322010529224963732008058970,
        0.063092092629978553290700663189204,
        0.104790010322250183839876322541518,
        0.140653259715525918745189590510238,
        0.169004726639267902826583426598550,
        0.190350578064785409913256402421014,
        0.204432940075298892414161999234649,
        0.209482141084727828012999174891714,
    ]
)
# Gauss weights on the odd-indexed half nodes (the 7-point Gauss rule).
_HALF_GAUSS = np.array(
    [
        0.0,
        0.129484966168869693270611432679082,
        0.0,
        0.279705391489276667901467771423780,
        0.0,
        0.381830050505118944950369775488975,
        0.0,
        0.417959183673469387755102040816327,
    ]
)


class GaussKronrod15:
    """The 15-point Kronrod rule with its embedded 7-point Gauss rule on [-1, 1]."""

    nodes = np.concatenate([-_HALF_NODES[:-1], _HALF_NODES[::-1]])
    kronrod_weights = np.concatenate([_HALF_KRONROD[:-1], _HALF_KRONROD[::-1]])
    gauss_weights = np.concatenate([_HALF_GAUSS[:-1], _HALF_GAUSS[::-1]])

    @classmethod
    def panel_nodes(cls, start: float, end: float) -> list[float]:
        """The 15 nodes mapped to the panel [start, end]."""
        middle, half = 0.5 * (start + end), 0.5 * (end - start)
        return [float(middle + half * node) for node in cls.nodes]


def integrate_panels(
    integrand: Callable[[list[float]], torch.Tensor],
    *,
    edges: list[float],
    tolerance: Callable[[torch.Tensor], torch.Tensor],
    prepare: Callable[[list[float], list[float]], None] | None = None,
    max_depth: int = 6,
) -> tuple[torch.Tensor, bool]:
    """Integrate many integrands at once over [edges[0], edges[-1]].

    Parameters
    ----------
    integrand : callable
        Maps a list of 15 times to a tensor (15, n): the n integrands there.
    edges : list of float
        The initial panels.
    tolerance : callable
        Maps a panel's Kronrod estimates (n,) to the allowed error per unit
        of length: a tensor of shape (n,), one per integrand, or a scalar.
    prepare : callable, default=None
        Called before each round with the times the round needs and those
        the next two rounds may need, so that values can be computed in as
        few passes as possible.
    max_depth : int, default=6
        Panels are split at most this many times.

    Returns
    -------
    integral : tensor of shape (n,)
    converged : bool
        False if a panel at ``max_depth`` still missed the tolerance.
    """
    rule = GaussKronrod15
    pending = [(a, b, 0) for a, b in itertools.pairwise(edges)]
    total, converged = None, True
    while pending:
        if prepare is not None:
            # This round's nodes, and those of two levels of splits ahead.
            needed, ahead = [], []
            for a, b, _ in pending:
                needed += rule.panel_nodes(a, b)
                for pieces in (2, 4):
                    cuts = np.linspace(a, b, pieces + 1)
                    for start, end in itertools.pairwise(cuts):
                        ahead += rule.panel_nodes(float(start), float(end))
            prepare(needed, ahead)
        split = []
        for a, b, depth in pending:
            values = integrand(rule.panel_nodes(a, b))
            half = 0.5 * (b - a)
            kronrod = half * torch.einsum(
                "k,kn->n", values.new_tensor(rule.kronrod_weights), values
            )
            gauss = half * torch.einsum(
                "k,kn->n", values.new_tensor(rule.gauss_weights), values
            )
            # Each row's error relative to its own tolerance, then the RMS
            # over rows, as torchdiffeq's error norm: a row with a huge
            # integral (a far-away point) does not loosen the others'.
            ratio = (kronrod - gauss).abs() / (tolerance(kronrod) * (b - a))
            within = bool(ratio.square().mean().sqrt() <= 1)
            if within or depth == max_depth:
                converged &= within
                total = kronrod if total is None else total + kronrod
            else:
                middle = 0.5 * (a + b)
                split += [(a, middle, depth + 1), (middle, b, depth + 1)]
        pending = split
    return total, converged


def integrate_panels_per_row(
    integrand: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    n_rows: int,
    *,
    edges: list[float],
    tolerance: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    max_depth: int = 6,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integrate n_rows integrands over [edges[0], edges[-1]], each row
    splitting only its own panels.

    Parameters
    ----------
    integrand : callable
        ``integrand(rows, times)``, both of shape (k,): the value (k,) of
        integrand ``rows[i]`` at ``times[i]``.
    n_rows : int
        The number of integrands.
    edges : list of float
        The initial panels, the same for every row.
    tolerance : callable
        Maps panels' Kronrod estimates (k,) to their allowed error per unit
        of length (k,).
    device : torch.device
        Where the row indices and times live.
    max_depth : int, default=6
        A row's panel is split at most this many times.

    Returns
    -------
    integral : tensor of shape (n_rows,), float64
    converged : tensor of shape (n_rows,), bool
        False for rows with a panel at ``max_depth`` that still missed.
    n_nodes : tensor of shape (n_rows,), int64
        The integrand's evaluations for each row.
    """
    rule = GaussKronrod15
    options = {"dtype": torch.float64, "device": device}
    nodes = torch.tensor(rule.nodes, **options)
    kronrod_weights = torch.tensor(rule.kronrod_weights, **options)
    gauss_weights = torch.tensor(rule.gauss_weights, **options)
    n_panels = len(edges) - 1
    rows = torch.arange(n_rows, device=device).repeat_interleave(n_panels)
    starts = torch.tensor(edges[:-1], **options).repeat(n_rows)
    ends = torch.tensor(edges[1:], **options).repeat(n_rows)
    depth = torch.zeros_like(rows)
    integral = torch.zeros(n_rows, **options)
    converged = torch.ones(n_rows, dtype=torch.bool, device=device)
    n_nodes = torch.zeros(n_rows, dtype=torch.int64, device=device)
    while rows.numel():
        middle, half = 0.5 * (starts + ends), 0.5 * (ends - starts)
        times = middle.unsqueeze(1) + half.unsqueeze(1) * nodes
        values = integrand(rows.repeat_interleave(len(nodes)), times.reshape(-1))
        values = values.double().reshape(len(rows), len(nodes))
        n_nodes.index_add_(0, rows, torch.full_like(rows, len(nodes)))
        kronrod = half * (values @ kronrod_weights)
        gauss = half * (values @ gauss_weights)
        error = (kronrod - gauss).abs()
        within = error <= tolerance(kronrod) * (ends - starts)
        last = depth >= max_depth
        converged[rows[~within & last]] = False
        done = within | last
        integral.index_add_(0, rows[done], kronrod[done])
        split = ~done
        rows, depth = rows[split].repeat(2), depth[split].repeat(2) + 1
        middle = middle[split]
        starts = torch.cat([starts[split], middle])
        ends = torch.cat([middle, ends[split]])
    return integral, converged, n_nodes
