"""Random numbers that each row draws from its own values.

Scoring draws dequantization noise and Hutchinson probes. Read from one
stream row after row, a row's draws, and so its score, would depend on its
place in the call: the same row scored twice in one call would get two
scores, and a row would score differently alone and in a batch. Drawn from
a hash of the row's values and the model's seed, they depend on that row
alone. Across rows they are as random as before, so every estimate keeps
its meaning (one uniform draw per row for dequantization; Rademacher
probes for Hutchinson).
"""

from __future__ import annotations

import numpy as np

__all__ = ["row_uniforms"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x):
    """splitmix64's finalizer (Steele, Lea and Flood, 2014): a bijection of
    uint64 whose output bits each depend on every input bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_uniforms(X: np.ndarray, seed: int, n_draws: int, stream: int = 0) -> np.ndarray:
    """Numbers uniform on [0, 1), ``n_draws`` per row of X.

    Row i's numbers are a function of the values of ``X[i]`` (as float64),
    ``seed`` and ``stream`` (independent streams for independent uses), and
    of nothing else. Returns an array of shape (n_rows, n_draws).
    """
    # + 0.0 turns -0.0 into 0.0: equal values hash alike.
    bits = np.ascontiguousarray(np.asarray(X, dtype=np.float64) + 0.0).view(np.uint64)
    with np.errstate(over="ignore"):
        start = _mix(_mix(np.uint64(seed) + _GOLDEN) + np.uint64(stream) * _GOLDEN)
        state = np.full(bits.shape[0], start)
        for column in bits.T:
            state = _mix(state ^ column) + _GOLDEN
        steps = _GOLDEN * np.arange(1, n_draws + 1, dtype=np.uint64)
        draws = _mix(state[:, None] + steps)
    # The top 53 bits: every float64 multiple of 2^-53 in [0, 1).
    return (draws >> np.uint64(11)) * 2.0**-53
