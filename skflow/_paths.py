"""Probability paths: how a noise point x0 and a data point x1 are joined.

Each path turns a pair (x0, x1), a time t in [0, 1] and a standard normal
``eps`` into a point ``x_t`` on the conditional path and the regression target
``u_t = d x_t / dt``, and knows its own t = 0 marginal, which is the base
density of the likelihood. Formulas: ``shared/MATH.md``. Time runs from
noise (t = 0) to data (t = 1).
"""

from __future__ import annotations

import math

import torch
from scipy.optimize import linear_sum_assignment

__all__ = [
    "ProbabilityPath",
    "LipmanPath",
    "IndependentPath",
    "OptimalTransportPath",
    "VariancePreservingPath",
    "PATHS",
    "make_path",
]


class ProbabilityPath:
    """A conditional probability path with Gaussian noise at t = 0.

    Parameters
    ----------
    sigma : float
        The path's noise level (its meaning depends on the path).
    """

    # Whether ``divergence_residual`` is implemented (training's
    # flow-divergence matching is skipped on the other paths).
    has_divergence_residual = False

    def __init__(self, sigma: float = 0.0) -> None:
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}.")
        self.sigma = float(sigma)

    @property
    def base_std(self) -> float:
        """Standard deviation of each coordinate of the t = 0 marginal."""
        return math.sqrt(1.0 + self.sigma**2)

    def couple(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Return the noise re-ordered to pair with ``x1`` (here: unchanged)."""
        return x0

    def interpolate(
        self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x_t, u_t)`` for a batch; ``t`` has shape (n, 1)."""
        raise NotImplementedError

    def sample_base(
        self,
        n_samples: int,
        n_features: int,
        *,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """Draw from the t = 0 marginal N(0, base_std^2 I).

        The draw is made in float32 and cast, so one seed gives the same
        noise in either precision.
        """
        noise = torch.randn(n_samples, n_features, generator=generator, device=device)
        return self.base_std * noise.to(dtype)

    def divergence_residual(
        self,
        t: torch.Tensor,
        x_t: torch.Tensor,
        u_t: torch.Tensor,
        velocity: torch.Tensor,
        divergence: torch.Tensor,
    ) -> torch.Tensor:
        """Flow-divergence matching's residual of each row (``docs/math.md``).

        ``div v - div u_t + (v - u_t) . grad log p_t(x_t | x1)``, times the
        path's width at t so that it stays of order one as t -> 1: its mean
        given x_t is zero for the field that generates the path (Huang et
        al., ICML 2025), so squared it supervises the divergence that the
        likelihood integrates.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no divergence residual; "
            "flow-divergence matching needs path='fm'."
        )

    def log_base_density(self, z: torch.Tensor) -> torch.Tensor:
        """Log density of the t = 0 marginal at each row of ``z``."""
        n_features = z.shape[-1]
        variance = self.base_std**2
        return -0.5 * (
            n_features * math.log(2 * math.pi * variance)
            + z.square().sum(-1) / variance
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


class LipmanPath(ProbabilityPath):
    """Lipman et al.'s OT path; ``sigma`` is sigma_min, the width at t = 1.

    x_t = t x1 + (1 - (1 - sigma) t) x0 and u_t = x1 - (1 - sigma) x0. Its
    t = 0 marginal is N(0, I) whatever sigma is.
    """

    has_divergence_residual = True

    @property
    def base_std(self) -> float:
        return 1.0

    def interpolate(self, x0, x1, t, eps):
        x_t = t * x1 + (1 - (1 - self.sigma) * t) * x0
        u_t = x1 - (1 - self.sigma) * x0
        return x_t, u_t

    def divergence_residual(self, t, x_t, u_t, velocity, divergence):
        # Given x1 the path is N(t x1, width^2 I), width = 1 - (1 - sigma) t,
        # whose score is -x0 / width and div u_t = -d (1 - sigma) / width;
        # x0 = x_t - t u_t.
        width = 1 - (1 - self.sigma) * t.reshape(-1)
        x0 = x_t - t.reshape(-1, 1) * u_t
        return (
            width * divergence
            + x_t.shape[1] * (1 - self.sigma)
            - ((velocity - u_t) * x0).sum(-1)
        )


class IndependentPath(ProbabilityPath):
    """Independent conditional flow matching (Tong et al.).

    x_t = (1 - t) x0 + t x1 + sigma eps and u_t = x1 - x0.
    """

    def interpolate(self, x0, x1, t, eps):
        x_t = (1 - t) * x0 + t * x1 + self.sigma * eps
        return x_t, x1 - x0


class OptimalTransportPath(IndependentPath):
    """As :class:`IndependentPath`, with minibatch exact OT pairing.

    The minibatch is cut into blocks of at most ``block_rows`` rows, and in
    each block the noise is re-paired with the data by the permutation that
    minimises the total squared Euclidean distance
    (``scipy.optimize.linear_sum_assignment``, exact). The assignment costs
    O(n^3) in the rows it pairs: blocks keep it a fraction of a training
    step, at no measured loss (docs/user_guide.md, "The training recipe").
    """

    block_rows = 128

    def couple(self, x0, x1):
        paired = torch.empty_like(x0)
        for start in range(0, x0.shape[0], self.block_rows):
            rows = slice(start, start + self.block_rows)
            cost = torch.cdist(x1[rows], x0[rows]).square()
            _, noise_index = linear_sum_assignment(
                cost.to("cpu", torch.float64).numpy()
            )
            paired[rows] = x0[rows][torch.as_tensor(noise_index, device=x0.device)]
        return paired


class VariancePreservingPath(ProbabilityPath):
    """Trigonometric variance-preserving path.

    x_t = sin(pi t / 2) x1 + cos(pi t / 2) x0 + sigma eps and
    u_t = (pi / 2) (cos(pi t / 2) x1 - sin(pi t / 2) x0).
    """

    def interpolate(self, x0, x1, t, eps):
        angle = 0.5 * math.pi * t
        sin, cos = torch.sin(angle), torch.cos(angle)
        x_t = sin * x1 + cos * x0 + self.sigma * eps
        u_t = 0.5 * math.pi * (cos * x1 - sin * x0)
        return x_t, u_t


PATHS: dict[str, type[ProbabilityPath]] = {
    "fm": LipmanPath,
    "icfm": IndependentPath,
    "ot-cfm": OptimalTransportPath,
    "vp": VariancePreservingPath,
}


def make_path(name: str, sigma: float) -> ProbabilityPath:
    """Build the path registered under ``name``."""
    try:
        path_class = PATHS[name]
    except KeyError:
        raise ValueError(
            f"Unknown path {name!r}; choose one of {sorted(PATHS)}."
        ) from None
    return path_class(sigma)
