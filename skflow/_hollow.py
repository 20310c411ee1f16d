"""A vector field whose exact divergence costs one pass: HollowNet.

Chen & Duvenaud, "Neural networks with cheap differential operators"
(NeurIPS 2019). Coordinate i of the velocity is

    v_i(t, x) = e(x) tau_i(x_i, h_i) + (A(t) x)_i,    h_i = c_i(t, x_-i),

where the conditioner c_i never sees x_i. Then dv_i/dx_i is tau_i's own
derivative with h_i held fixed, times e, plus tau_i de/dx_i and A(t)_ii,
and the exact trace of dv/dx comes out of the forward pass: about one pass
of the network, where an MLP pays d + 1. ``benchmarks/results/
cheap_divergence.md`` and ``benchmarks/results/hollow_field.md`` compare it
with the MLP.

The envelope e(x) = exp(-|x|^2 / (2 r^2 d)) hands the field over to the
linear A(t) x far from the (standardized) data: without it the units,
unbounded, let the trajectories of far rows run away (the user guide's
"Choosing the network" measures both).
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

    #: r of the envelope, in standard deviations per feature: set before,
    #: and checked on, the sets of ``benchmarks/results/hollow_field.md``.
    envelope_radius = 3.0

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

    def _layers(self, t, x, context=None, slopes: str = "none"):
        """The units' output tau (n, d), the envelope e (n,), A(t) x (n, d),
        A(t), and the activations' slopes that the divergence needs:
        ``"none"``, ``"tau"`` (the exact trace) or ``"all"`` (Hutchinson's
        tangents).

        Hidden units are laid out (d, n, units), one block per feature, so
        every layer is one batched matrix product without copies.
        """
        n, d = x.shape
        forward, backward = _ACTIVATIONS[self.activation]
        found = []

        def activate(pre, keep):
            if keep:
                found.append(backward(torch.ones_like(pre), pre))
            return forward(pre)

        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        inputs = [x, self.time_features(t.reshape(-1, 1).expand(n, 1))]
        if context is not None:
            inputs.append(context)
        first = self.hidden_layer_sizes[0]
        weight = torch.cat(
            [self.first_x * self.mask, self.first_other.view(d, first, -1)], dim=-1
        )
        # One product for every block, then the (d, n, units) layout.
        pre = torch.addmm(
            self.first_b, torch.cat(inputs, dim=-1), weight.flatten(0, 1).T
        )
        pre = pre.view(n, d, first).transpose(0, 1).contiguous()
        h = activate(pre, slopes == "all")
        for weight, bias in zip(self.blocks_w, self.blocks_b, strict=True):
            pre = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            h = activate(pre, slopes == "all")
        pre = torch.baddbmm(self.tau_b.unsqueeze(1), h, self.tau_h.transpose(1, 2))
        pre = pre + x.T.unsqueeze(-1) * self.tau_x.unsqueeze(1)
        g = activate(pre, slopes != "none")
        units = torch.baddbmm(
            self.out_b.view(d, 1, 1), g, self.out_w.unsqueeze(-1)
        ).squeeze(-1)
        envelope = torch.exp(-0.5 * x.square().sum(1) / (self.envelope_radius**2 * d))
        coupling = self._coupling(t)
        if coupling.dim() == 2:  # one time for every row
            coupled = x @ coupling.T
        else:
            coupled = torch.bmm(x.unsqueeze(1), coupling.transpose(1, 2)).squeeze(1)
        return units.T, envelope, coupled, coupling, found

    def _coupling(self, t: torch.Tensor) -> torch.Tensor:
        """A(t), of shape (d, d), or (n, d, d) for one time per row."""
        t = t.reshape(-1, 1, 1) if t.dim() else t
        return self.linear[0] + t * self.linear[1]

    def forward(
        self, t: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        units, envelope, coupled, _, _ = self._layers(t, x, context)
        return envelope.unsqueeze(1) * units + coupled

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
        exact = probes is None
        units, envelope, coupled, coupling, slopes = self._layers(
            t, x, context, "tau" if exact else "all"
        )
        velocity = envelope.unsqueeze(1) * units + coupled
        trace = torch.diagonal(coupling, dim1=-2, dim2=-1).sum(-1)
        # de/dx = -e x / (r^2 d): the envelope's part of the Jacobian is
        # e J_tau + tau (de/dx)^T.
        spread = self.envelope_radius**2 * x.shape[1]
        if exact:
            # h_i does not move with x_i: only tau_i's own input counts.
            gains = (self.tau_x * self.out_w).unsqueeze(-1)  # (d, units, 1)
            units_trace = torch.bmm(slopes[-1], gains).sum((0, 2))
            units_trace = units_trace - (x * units).sum(1) / spread
            return velocity, envelope * units_trace + trace
        # Hutchinson: push the probes (n, p, d) through every layer; the
        # tangents are laid out (d, n, p, units).
        d = x.shape[1]
        tangent = torch.einsum("npj,dkj->dnpk", probes, self.first_x * self.mask)
        tangent = tangent * slopes[0].unsqueeze(2)
        for weight, slope in zip(self.blocks_w, slopes[1:-1], strict=True):
            tangent = torch.einsum("dnpk,dlk->dnpl", tangent, weight)
            tangent = tangent * slope.unsqueeze(2)
        tangent = torch.einsum("dnpk,dlk->dnpl", tangent, self.tau_h)
        tangent = tangent + probes.permute(2, 0, 1).unsqueeze(-1) * self.tau_x.view(
            d, 1, 1, -1
        )
        moved = (tangent * slopes[-1].unsqueeze(2) * self.out_w.view(d, 1, 1, -1)).sum(
            -1
        )
        # (n, p, d): J_tau p, then the envelope's and A(t)'s parts.
        moved = moved.permute(1, 2, 0) - units.unsqueeze(1) * (
            probes @ x.unsqueeze(-1) / spread
        )
        moved = envelope.view(-1, 1, 1) * moved + probes @ coupling.transpose(-1, -2)
        return velocity, (moved * probes).sum(-1).mean(-1)
