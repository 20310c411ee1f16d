"""The error of a fitted model's log densities, measured when it is fitted.

The scoring solver trades accuracy for speed; ``fit`` measures what that
costs on a few rows against a tight float64 solve, so that every model
states the error of its own scores (``likelihood_error_``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from ._inference import score_chunk
from ._nets import log_mean_density, members_of

__all__ = ["REFERENCE", "likelihood_error", "rows_to_measure"]

# The tight solve: torchdiffeq's dopri5 on float64 with the divergence
# quadrature, two orders of magnitude tighter than the errors it measures.
REFERENCE = {"solver": "dopri5", "n_steps": None, "rtol": 1e-8, "atol": 1e-8}


def rows_to_measure(n_features: int) -> int:
    """How many rows to measure on: 256 in low dimension, fewer above.

    The tight solve pays about d + 1 passes of the network per divergence,
    so its rows shrink as 1 / (d + 1) to keep it a small share of a fit
    (its share of a fit is measured in benchmarks/results/fast_likelihood.md).
    """
    return int(np.clip(2048 // (n_features + 1), 32, 256))


def likelihood_error(
    field: torch.nn.Module,
    z: torch.Tensor,
    log_base_density: Callable,
    solver: dict,
) -> dict:
    """The absolute error of ``solver``'s log densities of the rows ``z``
    (standardized units, exact divergence) against the tight solve; for a
    :class:`FieldMixture`, of the mixture's.

    Returns ``{"mean": ..., "max": ..., "n_rows": ...}`` (nats).
    """
    members = members_of(field)
    scores = log_mean_density(
        [score_chunk(m, z, log_base_density, None, solver)[0] for m in members]
    )
    # MPS has no float64: the tight solve runs on the CPU there.
    device = torch.device("cpu") if z.device.type == "mps" else z.device
    z = z.to(device, torch.float64)
    reference = log_mean_density(
        [
            score_chunk(
                copy.deepcopy(m).to(device=device, dtype=torch.float64),
                z,
                log_base_density,
                None,
                REFERENCE,
            )[0]
            for m in members
        ]
    )
    error = np.abs(scores - reference)
    return {"mean": float(error.mean()), "max": float(error.max()), "n_rows": len(z)}
