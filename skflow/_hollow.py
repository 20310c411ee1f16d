"""A vector field whose exact divergence costs one pass: HollowNet.

Chen & Duvenaud, "Neural networks with cheap differential operators"
(NeurIPS 2019). Coordinate i of the velocity is

    v_i(t, x) = tau_i(x_i, h_i) + (A(t) x)_i,    h_i = c_i(t, x_-i),

where the conditioner c_i never sees x_i. Then dv_i/dx_i is tau_i's own
derivative with h_i held fixed, plus A(t)_ii, and the exact trace of dv/dx
comes out of the forward pass: about one pass of the network, where an MLP
pays d + 1. ``benchmarks/results/cheap_divergence.md`` and
``benchmarks/results/hollow_field.md`` compare it with the MLP.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from ._nets import TimeFeatures

__all__ = ["HollowVectorField", "hollow_layer_sizes"]

# f(pre) and f'(pre); the backward op with a gradient of ones is f'.
_ACTIVATIONS = {
    "gelu": (nn.functional.gelu, torch.ops.aten.gelu_backward),
    "silu": (nn.functional.silu, torch.ops.aten.silu_backward),
}


def _uniform(shape: Sequence[int], fan_in: int) -> nn.Parameter:
    """nn.Linear's default initialization, for a weight of ``fan_in`` inputs."""
    bound = 1 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


def hollow_layer_sizes(
    n_features: int, mlp_layer_sizes: Sequence[int], n_fourier_features: int = 128
) -> tuple[int, int]:
    """Units per coordinate (k, k) of a two-layer :class:`HollowVectorField`
    whose forward pass costs about as many multiply-adds as one pass of an
    MLP field (``mlp_layer_sizes``, ``n_fourier_features``) at the same d.
    """
    d, n_time = n_features, TimeFeatures().n_outputs
    widths = list(mlp_layer_sizes)
    mlp = (d + n_fourier_features + n_time) * widths[0] + widths[-1] * d
    mlp += sum(a * b for a, b in itertools.pairwise(widths))
    # Per row: (d + n_time) d k + d k^2 (conditioner) + d (k + 1) k + d k (tau).
    a, b = 2 * d, d * d + n_time * d + 2 * d
    k = (-b + math.sqrt(b * b + 4 * a * mlp)) / (2 * a)
    return (max(4, round(k)),) * 2


class HollowVectorField(nn.Module):
    """HollowNet field ``v(t, x)`` with a one-pass exact divergence.

    Parameters
    ----------
    n_features : int
        Dimension d of the data.
    hidden_layer_sizes : sequence of int
        Units per coordinate of the conditioner's layers (the first is
        masked so that block i does not see x_i, the next ones are
        block-diagonal); tau_i's hidden layer has as many as the last.
    n_frequencies : int, default=4
        sin/cos pairs of the time embedding.
    activation : {"gelu", "silu"}, default="gelu"
        The hidden units' activation.
    n_context : int, default=0
        Width of per-row features the field sees but does not move, passed
        as ``field(t, x, context)``: they enter every conditioner block.
    """

    def __init__(
        self,
        n_features: int,
        hidden_layer_sizes: Sequence[int],
        n_frequencies: int = 4,
        activation: str = "gelu",
        n_context: int = 0,
    ) -> None:
        super().__init__()
        self.n_features = d = int(n_features)
        self.hidden_layer_sizes = tuple(int(width) for width in hidden_layer_sizes)
        self.activation = activation
        self.n_context = int(n_context)
        self.time_features = TimeFeatures(n_frequencies)
        first, *others = self.hidden_layer_sizes
        fan_in = max(1, d - 1) + self.time_features.n_outputs + self.n_context
        # Conditioner, first layer: block i (first units) sees x_j, j != i.
        self.first_x = _uniform((d, first, d), fan_in)
        # Not saved: a file cannot change which inputs a block sees.
        self.register_buffer("mask", (1 - torch.eye(d)).unsqueeze(1), persistent=False)
        self.first_other = _uniform(
            (d * first, self.time_features.n_outputs + self.n_context), fan_in
        )
        self.first_b = _uniform((d * first,), fan_in)
        # Conditioner, next layers: one block per coordinate.
        self.blocks_w = nn.ParameterList()
        self.blocks_b = nn.ParameterList()
        for n_in, n_out in zip(self.hidden_layer_sizes, others, strict=False):
            self.blocks_w.append(_uniform((d, n_out, n_in), n_in))
            self.blocks_b.append(_uniform((d, n_out), n_in))
        # tau_i: (x_i, h_i) -> units -> v_i.
        last = self.hidden_layer_sizes[-1]
        self.tau_x = _uniform((d, last), last + 1)
        self.tau_h = _uniform((d, last, last), last + 1)
        self.tau_b = _uniform((d, last), last + 1)
        self.out_w = _uniform((d, last), last)
        self.out_b = _uniform((d,), last)
        # A(t) = A0 + t A1: linear couplings between all coordinates, whose
        # trace is free. Zero at the start: the field starts as a HollowNet.
        self.linear = nn.Parameter(torch.zeros(2, d, d))

    @property
    def widest_layer(self) -> int:
        """Units of a row's widest hidden tensor (chunk sizes follow it)."""
        return self.n_features * max(self.hidden_layer_sizes)

    @property
    def divergence_directions(self) -> int:
        """Directions pushed through the network for the exact divergence."""
        return 1

    def config(self) -> dict:
        """The architecture, as plain data: ``from_config`` rebuilds it."""
        config = {
            "n_features": self.n_features,
            "hidden_layer_sizes": list(self.hidden_layer_sizes),
            "n_frequencies": len(self.time_features.frequencies),
            "activation": self.activation,
        }
        if self.n_context:
            config["n_context"] = self.n_context
        return config

    @classmethod
    def from_config(cls, config: dict) -> HollowVectorField:
        """A field of the architecture ``config``, with fresh weights."""
        return cls(
            config["n_features"],
            config["hidden_layer_sizes"],
            config["n_frequencies"],
            activation=config["activation"],
            n_context=config.get("n_context", 0),
        )

    def _layers(self, t, x, context=None):
        """The velocity, and the slopes the divergence needs."""
        n, d = x.shape
        forward, backward = _ACTIVATIONS[self.activation]

        def activate(pre):
            return forward(pre), backward(torch.ones_like(pre), pre)

        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        others = [self.time_features(t.reshape(-1, 1).expand(n, 1))]
        if context is not None:
            others.append(context)
        first_weight = (self.first_x * self.mask).reshape(-1, d)
        pre = torch.addmm(self.first_b, x, first_weight.T)
        pre = pre + torch.cat(others, dim=-1) @ self.first_other.T
        h, slope = activate(pre.view(n, d, -1))
        slopes = [slope]
        for weight, bias in zip(self.blocks_w, self.blocks_b, strict=True):
            h, slope = activate(torch.einsum("ndk,dlk->ndl", h, weight) + bias)
            slopes.append(slope)
        pre_tau = (
            x.unsqueeze(-1) * self.tau_x
            + torch.einsum("ndk,dlk->ndl", h, self.tau_h)
            + self.tau_b
        )
        g, slope_tau = activate(pre_tau)
        coupling = self._coupling(t)
        velocity = (g * self.out_w).sum(-1) + self.out_b
        velocity = velocity + (x.unsqueeze(1) @ coupling.transpose(-1, -2)).squeeze(1)
        return velocity, coupling, first_weight, slopes, slope_tau

    def _coupling(self, t: torch.Tensor) -> torch.Tensor:
        """A(t), of shape (d, d), or (n, d, d) for one time per row."""
        t = t.reshape(-1, 1, 1) if t.dim() else t
        return self.linear[0] + t * self.linear[1]

    def forward(
        self, t: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._layers(t, x, context)[0]

    @torch.no_grad()
    def velocity_and_divergence(
        self,
        t: torch.Tensor,
        x: torch.Tensor,
        probes: torch.Tensor | None = None,
        workspace: dict | None = None,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``v(t, x)`` and its divergence, as
        :meth:`skflow._nets.VectorField.velocity_and_divergence` (whose
        arguments these are; ``workspace`` is not needed here)."""
        velocity, coupling, first_weight, slopes, slope_tau = self._layers(
            t, x, context
        )
        trace = torch.diagonal(coupling, dim1=-2, dim2=-1).sum(-1)
        if probes is None:
            # h_i does not move with x_i: only tau_i's own input counts.
            divergence = (slope_tau * (self.tau_x * self.out_w)).sum((-1, -2))
            return velocity, divergence + trace
        # Hutchinson: push the probes through every layer (forward mode).
        n, d = x.shape
        n_probes = probes.shape[1]
        tangent = (probes @ first_weight.T).view(n, n_probes, d, -1)
        tangent = tangent * slopes[0].unsqueeze(1)
        for weight, slope in zip(self.blocks_w, slopes[1:], strict=True):
            tangent = torch.einsum("npdk,dlk->npdl", tangent, weight)
            tangent = tangent * slope.unsqueeze(1)
        tangent = probes.unsqueeze(-1) * self.tau_x + torch.einsum(
            "npdk,dlk->npdl", tangent, self.tau_h
        )
        moved = (tangent * slope_tau.unsqueeze(1) * self.out_w).sum(-1)
        moved = moved + probes @ coupling.transpose(-1, -2)
        return velocity, (moved * probes).sum(-1).mean(-1)
