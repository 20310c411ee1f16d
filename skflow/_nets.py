"""Vector-field networks v(t, x) for flow matching."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "ConditionalVectorField",
    "FieldMixture",
    "FourierFeatures",
    "TimeFeatures",
    "VectorField",
    "log_mean_density",
    "members_of",
]


class TimeFeatures(nn.Module):
    """Embed a time t in [0, 1] as ``[t, sin(pi k t), cos(pi k t)]``, k = 1..K.

    Half-integer periods keep t = 0 and t = 1 apart, and the sin/cos pairs
    let a small MLP follow fields that change quickly near the data end.
    """

    def __init__(self, n_frequencies: int = 4) -> None:
        super().__init__()
        frequencies = math.pi * torch.arange(1, n_frequencies + 1)
        self.register_buffer("frequencies", frequencies)

    @property
    def n_outputs(self) -> int:
        return 1 + 2 * len(self.frequencies)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Map ``t`` of shape (n, 1) to features of shape (n, 1 + 2K)."""
        angles = t * self.frequencies
        return torch.cat([t, torch.sin(angles), torch.cos(angles)], dim=-1)


class FourierFeatures(nn.Module):
    """Random Fourier features ``e(x) [sin(x B), cos(x B)]`` of the points x.

    ``B`` (d x K/2) is drawn once from N(0, scale^2) and kept as a buffer
    (it is saved with the weights). An MLP on raw coordinates learns sharp
    structure (edges, thin arms) slowly, the spectral bias of Tancik et
    al. (NeurIPS 2020); these features hand it oscillations of about
    ``scale`` radians per standardized unit to start from.

    The envelope e(x) = exp(-|x|^2 / (50 d)) is 1 over the (standardized)
    data and vanishes far from it: there the field is a plain MLP of x,
    nearly linear, so far-away points keep smooth, cheap trajectories
    instead of crossing thousands of oscillations.
    """

    def __init__(self, n_features: int, n_outputs: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer(
            "projection", scale * torch.randn(n_features, n_outputs // 2)
        )
        self.envelope_width = 50.0 * n_features  # 2 R^2, R = 5 sqrt(d)

    @property
    def n_outputs(self) -> int:
        return 2 * self.projection.shape[1]

    def _parts(self, x: torch.Tensor):
        envelope = torch.exp(-x.square().sum(-1, keepdim=True) / self.envelope_width)
        # Where the envelope underflows to 0 the features are 0 whatever
        # the angles: zero them, as sin and cos of huge angles (a point
        # 1e30 away) take a slow exact argument reduction.
        angles = torch.where(envelope > 0, x @ self.projection, 0.0)
        return torch.sin(angles), torch.cos(angles), envelope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sin, cos, envelope = self._parts(x)
        return torch.cat([sin, cos], dim=-1) * envelope

    def with_tangents(
        self, x: torch.Tensor, directions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The features at x (n, d) and their derivatives along ``directions``.

        ``directions`` has shape (n, k, d); None stands for the d coordinate
        directions (without building and multiplying an identity). Returns
        (n, n_outputs) and (n, k, n_outputs). By the product rule, along e,
        e(x) sin(xB) moves by e(x) cos(xB) (e B) + sin(xB) de, and
        e(x) cos(xB) by -e(x) sin(xB) (e B) + cos(xB) de, where
        de = -2 e(x) (x . e) / width.
        """
        sin, cos, envelope = self._parts(x)
        features = torch.cat([sin, cos], dim=-1) * envelope
        if directions is None:
            along_b = self.projection.unsqueeze(0)  # e_j B is row j of B
            along_x = x.unsqueeze(-1)  # e_j . x = x_j
        else:
            along_b = directions @ self.projection
            along_x = directions @ x.unsqueeze(-1)
        sin, cos, envelope = (part.unsqueeze(1) for part in (sin, cos, envelope))
        moved = envelope * along_b
        slope = along_x * envelope * (-2 / self.envelope_width)
        tangents = torch.cat([cos * moved + sin * slope, cos * slope - sin * moved], -1)
        return features, tangents


class VectorField(nn.Module):
    """An MLP vector field ``v(t, x)`` with smooth activations (GELU or SiLU).

    Its inputs are x, random Fourier features of x (:class:`FourierFeatures`)
    and sin/cos features of t (:class:`TimeFeatures`).

    Called as ``field(t, x)`` (torchdiffeq's convention): ``x`` of shape
    (n, d) and ``t`` a scalar tensor, or one time per row, of shape (n,) or
    (n, 1). Returns a tensor of the shape of ``x``.

    Parameters
    ----------
    n_features : int
        Dimension d of the data.
    hidden_layer_sizes : sequence of int
        Width of each hidden layer.
    n_frequencies : int, default=4
        Number of sin/cos pairs in the time embedding.
    n_fourier_features : int, default=128
        Number of random Fourier features of x (half sines, half cosines);
        0 for none.
    fourier_scale : float, default=1.0
        Standard deviation of the random frequencies.
    activation : {"gelu", "silu"}, default="gelu"
        The hidden layers' activation. Both are smooth, as the divergence
        needs (benchmarks/results/recipe_ablation.md compares them).
    n_context : int, default=0
        Width of per-row features that the field sees but does not move
        (a condition's embedding, :class:`ConditionalVectorField`), passed
        as ``field(t, x, context)``; they add nothing to the divergence.
    """

    def __init__(
        self,
        n_features: int,
        hidden_layer_sizes: Sequence[int],
        n_frequencies: int = 4,
        n_fourier_features: int = 128,
        fourier_scale: float = 1.0,
        activation: str = "gelu",
        n_context: int = 0,
    ) -> None:
        super().__init__()
        self.n_features = int(n_features)
        self.n_context = int(n_context)
        self.activation = activation
        self.hidden_layer_sizes = tuple(int(width) for width in hidden_layer_sizes)
        self.time_features = TimeFeatures(n_frequencies)
        self.fourier_features = FourierFeatures(
            self.n_features, n_fourier_features, fourier_scale
        )
        widths = [
            self.n_features
            + self.fourier_features.n_outputs
            + self.time_features.n_outputs
            + self.n_context
        ]
        widths += list(self.hidden_layer_sizes)
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(widths):
            layers += [nn.Linear(n_in, n_out), _ACTIVATIONS[activation][0]()]
        layers.append(nn.Linear(widths[-1], self.n_features))
        self.mlp = nn.Sequential(*layers)

    @property
    def widest_layer(self) -> int:
        """Units of a row's widest hidden tensor (chunk sizes follow it)."""
        return max(self.hidden_layer_sizes)

    @property
    def divergence_directions(self) -> int:
        """Directions pushed through the network for the exact divergence."""
        return self.n_features

    def config(self) -> dict:
        """The architecture, as plain data: ``from_config`` rebuilds it.

        The weights and the Fourier projection are in ``state_dict()``.
        """
        config = {
            "n_features": self.n_features,
            "hidden_layer_sizes": list(self.hidden_layer_sizes),
            "n_frequencies": len(self.time_features.frequencies),
            "n_fourier_features": self.fourier_features.n_outputs,
            "activation": self.activation,
        }
        if self.n_context:
            config["n_context"] = self.n_context
        return config

    @classmethod
    def from_config(cls, config: dict) -> VectorField:
        """A field of the architecture ``config`` (from :meth:`config`), with
        fresh weights: load a ``state_dict`` into it."""
        return cls(
            config["n_features"],
            config["hidden_layer_sizes"],
            config["n_frequencies"],
            n_fourier_features=config["n_fourier_features"],
            activation=config["activation"],
            n_context=config.get("n_context", 0),
        )

    def _inputs(
        self,
        t: torch.Tensor,
        x: torch.Tensor,
        fourier: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.reshape(-1, 1).expand(x.shape[0], 1)
        if fourier is None:
            fourier = self.fourier_features(x)
        parts = [x, fourier, self.time_features(t)]
        if context is not None:
            parts.append(context)
        return torch.cat(parts, dim=-1)

    def forward(
        self, t: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.mlp(self._inputs(t, x, context=context))

    @torch.no_grad()
    def velocity_and_divergence(
        self,
        t: torch.Tensor,
        x: torch.Tensor,
        probes: torch.Tensor | None = None,
        workspace: dict | None = None,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``v(t, x)`` and its divergence in one forward pass, no autograd.

        Directions are pushed through the MLP with it (forward-mode
        differentiation in closed form): the d coordinate directions for the
        exact trace of dv/dx, or the Hutchinson ``probes`` of shape
        (n, n_probes, d) for the estimate mean_k eps_k^T (dv/dx) eps_k.
        Each layer costs one matrix product over all directions at once.

        Parameters
        ----------
        t : tensor
            Time, a scalar or one per row.
        x : tensor of shape (n, d)
            Points.
        probes : tensor of shape (n, n_probes, d), default=None
            Hutchinson probes; None for the exact divergence.
        workspace : dict, default=None
            Buffers kept between calls of one ODE solve: the large
            intermediate tensors are written in place instead of being
            allocated (and page-faulted) at every evaluation.
        context : tensor of shape (n, n_context), default=None
            The rows' fixed features (see ``n_context``).

        Returns
        -------
        velocity : tensor of shape (n, d)
        divergence : tensor of shape (n,)
        """
        buffers = _Buffers(workspace, x)
        linears = list(self.mlp)[::2]
        first, hidden, last = linears[0], linears[1:-1], linears[-1]
        n, d = x.shape
        n_fourier = self.fourier_features.n_outputs
        # The time features and the context do not depend on x.
        weight_x = first.weight[:, :d]
        weight_fourier = first.weight[:, d : d + n_fourier]
        # One pass gives the Fourier features and their derivatives along
        # the coordinate directions (exact) or the probes (Hutchinson).
        fourier, fourier_tangents = self.fourier_features.with_tangents(x, probes)
        layer_with_slope = _ACTIVATIONS[self.activation][1]
        h, slope = layer_with_slope(
            first, self._inputs(t, x, fourier, context), buffers, 0
        )
        if probes is None:
            # Along x_j, the first layer moves by column j of its weight plus
            # the Fourier features' derivative through their weights.
            directions = d
            tangent = buffers.get("tangent0", n, d, first.out_features)
            torch.add(
                fourier_tangents @ weight_fourier.T,
                weight_x.T.unsqueeze(0),
                out=tangent,
            )
        else:
            directions = probes.shape[1]
            tangent = probes @ weight_x.T
            tangent += fourier_tangents @ weight_fourier.T
        tangent.mul_(slope.unsqueeze(1))
        for layer, linear in enumerate(hidden, start=1):
            h, slope = layer_with_slope(linear, h, buffers, layer)
            out = buffers.get(
                f"tangent{layer % 2 + 1}", n * directions, linear.out_features
            )
            torch.mm(tangent.reshape(n * directions, -1), linear.weight.T, out=out)
            tangent = out.view(n, directions, -1).mul_(slope.unsqueeze(1))
        velocity = last(h)
        if probes is None:
            # trace = sum_j (W_last tangent_j)_j: only the diagonal is needed.
            divergence = torch.einsum("njk,jk->n", tangent, last.weight)
        else:
            products = tangent @ last.weight.T  # (dv/dx) eps, (n, n_probes, d)
            divergence = (products * probes).sum(-1).mean(-1)
        return velocity, divergence

    def velocity_and_divergence_with_graph(
        self, t: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``v(t, x)`` and its exact divergence, differentiable in the weights.

        The closed-form forward-mode pass of :meth:`velocity_and_divergence`
        without its buffers and in-place writes, so that autograd can train
        through it: the d coordinate directions travel with the rows, which
        costs less than d backward passes with a graph (training's
        flow-divergence matching pays it every step).
        """
        linears = list(self.mlp)[::2]
        first, hidden, last = linears[0], linears[1:-1], linears[-1]
        d = x.shape[1]
        n_fourier = self.fourier_features.n_outputs
        fourier, fourier_tangents = self.fourier_features.with_tangents(x)
        activation = getattr(nn.functional, self.activation)
        slope_of = _SLOPES[self.activation]
        pre = first(self._inputs(t, x, fourier, context))
        tangent = fourier_tangents @ first.weight[:, d : d + n_fourier].T
        tangent = (tangent + first.weight[:, :d].T) * slope_of(pre).unsqueeze(1)
        h = activation(pre)
        for linear in hidden:
            pre = linear(h)
            tangent = (tangent @ linear.weight.T) * slope_of(pre).unsqueeze(1)
            h = activation(pre)
        divergence = torch.einsum("njk,jk->n", tangent, last.weight)
        return last(h), divergence


class ConditionalVectorField(nn.Module):
    """A field on rows ``[y, x]`` that moves the targets y and carries the
    condition x along: ``v(t, [y, x]) = [core(t, y, embedding(x)), 0]``.

    The condition enters the :class:`VectorField` ``core`` through a
    learned embedding, an MLP of x. Its velocity is zero, so every ODE
    solver carries each row's condition unchanged and the divergence is
    the targets' alone (dv/dx is never asked for): the solvers, their
    row-by-row step control and the chunking of the unconditional model
    serve p(y | x) as they are.

    Parameters
    ----------
    n_targets : int
        Dimension of y.
    n_conditions : int
        Dimension of x.
    hidden_layer_sizes : sequence of int
        The core's hidden widths.
    embedding_layer_sizes : sequence of int
        Widths of the embedding MLP; the last is the embedding's (no
        activation after it).
    n_frequencies, n_fourier_features, fourier_scale, activation
        As :class:`VectorField` (the Fourier features are of y).
    """

    def __init__(
        self,
        n_targets: int,
        n_conditions: int,
        hidden_layer_sizes: Sequence[int],
        embedding_layer_sizes: Sequence[int] = (128, 128, 64),
        n_frequencies: int = 4,
        n_fourier_features: int = 128,
        fourier_scale: float = 1.0,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.n_targets, self.n_conditions = int(n_targets), int(n_conditions)
        self.embedding_layer_sizes = tuple(int(w) for w in embedding_layer_sizes)
        widths = [self.n_conditions, *self.embedding_layer_sizes]
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(widths):
            layers += [nn.Linear(n_in, n_out), _ACTIVATIONS[activation][0]()]
        self.embedding = nn.Sequential(*layers[:-1])
        self.core = VectorField(
            self.n_targets,
            hidden_layer_sizes,
            n_frequencies,
            n_fourier_features=n_fourier_features,
            fourier_scale=fourier_scale,
            activation=activation,
            n_context=widths[-1],
        )

    @property
    def hidden_layer_sizes(self) -> tuple[int, ...]:
        return self.core.hidden_layer_sizes

    @property
    def widest_layer(self) -> int:
        return self.core.widest_layer

    @property
    def divergence_directions(self) -> int:
        return self.core.divergence_directions

    def config(self) -> dict:
        """The architecture, as plain data: ``from_config`` rebuilds it."""
        core = self.core.config()
        del core["n_features"], core["n_context"]
        return {
            "n_targets": self.n_targets,
            "n_conditions": self.n_conditions,
            "embedding_layer_sizes": list(self.embedding_layer_sizes),
            **core,
        }

    @classmethod
    def from_config(cls, config: dict) -> ConditionalVectorField:
        """A field of the architecture ``config``, with fresh weights."""
        return cls(
            config["n_targets"],
            config["n_conditions"],
            config["hidden_layer_sizes"],
            config["embedding_layer_sizes"],
            config["n_frequencies"],
            n_fourier_features=config["n_fourier_features"],
            activation=config["activation"],
        )

    def _split(self, state: torch.Tensor):
        y, x = state[:, : self.n_targets], state[:, self.n_targets :]
        return y, x, self.embedding(x)

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        y, x, context = self._split(state)
        return torch.cat([self.core(t, y, context), torch.zeros_like(x)], dim=-1)

    @torch.no_grad()
    def velocity_and_divergence(
        self,
        t: torch.Tensor,
        state: torch.Tensor,
        probes: torch.Tensor | None = None,
        workspace: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`VectorField.velocity_and_divergence`, the divergence in
        y only; probes may span the whole state (their y part is used)."""
        y, x, context = self._split(state)
        if probes is not None:
            probes = probes[..., : self.n_targets]
        velocity, divergence = self.core.velocity_and_divergence(
            t, y, probes, workspace, context
        )
        return torch.cat([velocity, torch.zeros_like(x)], dim=-1), divergence

    def velocity_and_divergence_with_graph(
        self, t: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`VectorField.velocity_and_divergence_with_graph`, the
        divergence in y only (the embedding does not depend on y)."""
        y, x, context = self._split(state)
        velocity, divergence = self.core.velocity_and_divergence_with_graph(
            t, y, context
        )
        return torch.cat([velocity, torch.zeros_like(x)], dim=-1), divergence


class FieldMixture(nn.Module):
    """Fields whose densities are averaged: p(s) = (1 / K) sum_k p_k(s).

    Each member is a whole flow from the base density to the data, so the
    mixture has no velocity of its own: its log-density is the log of the
    mean of the members' densities, and a sample is a member's sample, the
    member drawn uniformly.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    # The sizes the estimators read: the members share one architecture.
    @property
    def widest_layer(self) -> int:
        return self.members[0].widest_layer

    @property
    def divergence_directions(self) -> int:
        return self.members[0].divergence_directions

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        raise TypeError(
            "A mixture of fields has no velocity of its own: call one of its "
            "members (vector_field_.members[k])."
        )


def members_of(field: nn.Module) -> list[nn.Module]:
    """The fields whose densities ``field`` averages: its members, or itself."""
    return list(field.members) if isinstance(field, FieldMixture) else [field]


def log_mean_density(log_densities: Sequence[np.ndarray]) -> np.ndarray:
    """log((1 / K) sum_k exp(l_k)), row by row, of K members' log densities."""
    stacked = np.stack(log_densities)
    return np.logaddexp.reduce(stacked, axis=0) - math.log(len(stacked))


class _Buffers:
    """Named scratch tensors, reused while their shape stays the same."""

    def __init__(self, workspace: dict | None, like: torch.Tensor) -> None:
        self.workspace = {} if workspace is None else workspace
        self.like = like

    def get(self, name: str, *shape: int) -> torch.Tensor:
        buffer = self.workspace.get(name)
        if (
            buffer is None
            or buffer.shape != shape
            or buffer.dtype != self.like.dtype
            or buffer.device != self.like.device
        ):
            buffer = torch.empty(shape, dtype=self.like.dtype, device=self.like.device)
            self.workspace[name] = buffer
        return buffer


def _layer_with_slope(forward, backward):
    """One hidden layer: f(W x + b) and the derivative f' at W x + b."""

    def layer_with_slope(
        linear: nn.Linear, inputs: torch.Tensor, buffers: _Buffers, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (inputs.shape[0], linear.out_features)
        pre = buffers.get(f"pre{layer}", *shape)
        torch.addmm(linear.bias, inputs, linear.weight.T, out=pre)
        # The backward op with a gradient of ones is f', in one pass.
        ones = torch.ones((), dtype=pre.dtype, device=pre.device).expand(shape)
        slope = backward(ones, pre, grad_input=buffers.get(f"slope{layer}", *shape))
        h = forward(pre, out=buffers.get(f"h{layer}", *shape))
        return h, slope

    return layer_with_slope


def _gelu_slope(pre: torch.Tensor) -> torch.Tensor:
    """GELU' at ``pre`` by its backward op with a gradient of ones: one
    fused kernel, which torch can differentiate again."""
    ones = torch.ones((), dtype=pre.dtype, device=pre.device).expand(pre.shape)
    return torch.ops.aten.gelu_backward(ones, pre)


def _silu_slope(pre: torch.Tensor) -> torch.Tensor:
    """SiLU' = s(x) (1 + x (1 - s(x))), spelled out: torch cannot
    differentiate silu's backward op."""
    sigmoid = torch.sigmoid(pre)
    return sigmoid * (1 + pre * (1 - sigmoid))


_SLOPES = {"gelu": _gelu_slope, "silu": _silu_slope}

# name: (module, closed-form layer with its slope)
_ACTIVATIONS = {
    "gelu": (
        nn.GELU,
        _layer_with_slope(
            torch.ops.aten.gelu.out, torch.ops.aten.gelu_backward.grad_input
        ),
    ),
    "silu": (
        nn.SiLU,
        _layer_with_slope(
            torch.ops.aten.silu.out, torch.ops.aten.silu_backward.grad_input
        ),
    ),
}
