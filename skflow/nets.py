"""Vector-field networks v(t, x) for flow matching."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["TimeFeatures", "VectorField"]


class TimeFeatures(nn.Module):
    """Embed a time t in [0, 1] as ``[t, sin(pi k t), cos(pi k t)]``, k = 1..K.

    Half-integer periods keep t = 0 and t = 1 apart, and the sin/cos pairs
    let a small MLP follow fields that change quickly near the data end.
    """

    def __init__(self, n_frequencies: int = 4) -> None:
        super().__init__()
        frequencies = math.pi * torch.arange(1, n_frequencies + 1, dtype=torch.float64)
        self.register_buffer("frequencies", frequencies)

    @property
    def n_outputs(self) -> int:
        return 1 + 2 * len(self.frequencies)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Map ``t`` of shape (n, 1) to features of shape (n, 1 + 2K)."""
        angles = t * self.frequencies
        return torch.cat([t, torch.sin(angles), torch.cos(angles)], dim=-1)


class VectorField(nn.Module):
    """An MLP vector field ``v(t, x)`` with SiLU activations.

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
    """

    def __init__(
        self,
        n_features: int,
        hidden_layer_sizes: Sequence[int],
        n_frequencies: int = 4,
    ) -> None:
        super().__init__()
        self.n_features = int(n_features)
        self.hidden_layer_sizes = tuple(int(width) for width in hidden_layer_sizes)
        self.time_features = TimeFeatures(n_frequencies)
        widths = [self.n_features + self.time_features.n_outputs]
        widths += list(self.hidden_layer_sizes)
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(widths):
            layers += [nn.Linear(n_in, n_out), nn.SiLU()]
        layers.append(nn.Linear(widths[-1], self.n_features))
        self.mlp = nn.Sequential(*layers)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.reshape(-1, 1).expand(x.shape[0], 1)
        return self.mlp(torch.cat([x, self.time_features(t)], dim=-1))
