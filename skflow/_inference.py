"""Chunked inference: memory bounds, failure isolation, solver statistics.

Scoring and sampling solve at most a chunk of rows at a time, so memory is
bounded whatever the number of rows. Adaptive solvers share their steps
across the rows of a solve, so one row whose solve fails (a state that
overflows, a stiff trajectory) would fail its whole chunk: such a chunk is
split in halves down to the rows that fail on their own, and only those
fall back to a fixed-step solve.

Scoring writes nothing on the estimator: what the solves cost is counted
only inside a :func:`solver_stats` block, in the thread that opened it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ._device import to_numpy, to_tensor
from ._ode import (
    MAX_EVALUATIONS,
    SolveFailedError,
    SolveStats,
    integrate,
    log_likelihood,
)
from ._row_noise import row_uniforms

__all__ = [
    "FALLBACK_STEPS",
    "SolverStats",
    "chunks",
    "log_densities",
    "rows_per_chunk",
    "samples",
    "score_chunk",
    "solve_isolating_failures",
    "solver_stats",
]

# "auto" chunks hold at most this many numbers in their largest tensor
# (rows x directions x width). On a CPU, the size at which the rowwise
# solver, whose batch shrinks as rows finish, scored fastest from 2 to 64
# features (benchmarks/results/quadrature_tolerance.md, "Rows per chunk");
# GPUs want large launches.
_CPU_CHUNK_ELEMENTS = 2**22
_ACCELERATOR_CHUNK_ELEMENTS = 2**25

# A row on which the adaptive solver gives up is scored by this many rk4
# steps: bounded time, and a number where there would be none.
FALLBACK_STEPS = 64


def rows_per_chunk(
    inference_batch_size: int | str,
    widest_layer: int,
    n_directions: int,
    device: torch.device,
) -> int:
    """Rows per chunk: the parameter, or for "auto" the rows whose largest
    tensor, (rows, directions, width), fits the device's budget."""
    if inference_batch_size != "auto":
        return inference_batch_size
    budget = (
        _CPU_CHUNK_ELEMENTS if device.type == "cpu" else _ACCELERATOR_CHUNK_ELEMENTS
    )
    return max(64, budget // (widest_layer * max(1, n_directions)))


def chunks(n_rows: int, size: int, *, task: str, verbose: int) -> Iterator[slice]:
    """Slices of at most ``size`` rows covering n_rows.

    With ``verbose >= 1`` and more than one chunk, iterating them shows a
    progress bar named ``task``.
    """
    slices = [
        slice(start, min(start + size, n_rows)) for start in range(0, n_rows, size)
    ]
    return tqdm(slices, desc=task, unit="chunk", disable=verbose < 1 or len(slices) < 2)


def solve_isolating_failures(
    solve: Callable, *, n_rows: int, solver: dict, start: int = 0
) -> Iterator[tuple]:
    """Yield ``(rows, *solve(rows, **solver), fell_back)`` over n_rows rows.

    A solve that raises :class:`SolveFailedError` is split in halves, down
    to the single rows that fail on their own; only those are solved again,
    by ``FALLBACK_STEPS`` rk4 steps, and yielded with ``fell_back=True``.
    """
    rows = slice(start, start + n_rows)
    try:
        result = solve(rows, **solver)
    except SolveFailedError:
        result = None
    if result is not None:
        yield rows, *result, False
    elif n_rows == 1:
        fallback = {**solver, "solver": "rk4", "n_steps": FALLBACK_STEPS}
        yield rows, *solve(rows, **fallback), True
    else:
        half = n_rows // 2
        yield from solve_isolating_failures(
            solve, n_rows=half, solver=solver, start=start
        )
        yield from solve_isolating_failures(
            solve, n_rows=n_rows - half, solver=solver, start=start + half
        )


def score_chunk(
    field: Callable,
    z: torch.Tensor,
    log_base_density: Callable,
    probes: torch.Tensor | None,
    solver: dict,
) -> tuple[np.ndarray, list[SolveStats], int]:
    """Log densities of the standardized rows ``z``, isolating failed solves.

    Returns the log densities (float64 numpy), the stats of each solve,
    and the number of rows that fell back to fixed steps.
    """

    def solve(part, **options):
        return log_likelihood(
            field,
            z[part],
            log_base_density,
            probes=None if probes is None else probes[part],
            **options,
        )

    log_density = np.empty(z.shape[0])
    stats, n_fallbacks = [], 0
    for part, part_log_density, part_stats, fell_back in solve_isolating_failures(
        solve, n_rows=z.shape[0], solver=solver
    ):
        log_density[part] = to_numpy(part_log_density)
        stats.append(part_stats)
        n_fallbacks += fell_back
    # The rowwise solver gives up on rows one by one (NaN): only they fall back.
    gave_up = torch.from_numpy(np.flatnonzero(np.isnan(log_density)))
    if len(gave_up):
        fallback = {**solver, "solver": "rk4", "n_steps": FALLBACK_STEPS}
        redone, redone_stats = solve(gave_up.to(z.device), **fallback)
        log_density[gave_up.numpy()] = to_numpy(redone)
        stats.append(redone_stats)
        n_fallbacks += len(gave_up)
    return log_density, stats, n_fallbacks


@dataclass
class SolverStats:
    """What the ODE solves of the scoring and sampling calls made inside a
    :func:`solver_stats` block cost.

    Attributes
    ----------
    n_evaluations : int
        Evaluations of the vector field, summed over every solve.
    n_divergence_evaluations : int
        Those that computed the divergence too (an exact divergence costs
        about d + 1 plain evaluations).
    max_evaluations_per_chunk : int
        The most evaluations one solve took: the slowest chunk.
    n_chunks : int
        The number of solves (a chunk whose adaptive solve failed counts
        once per part it was split into).
    n_rows : int
        Rows solved (a row solved again after a failure counts again).
    n_row_evaluations : int
        Evaluations summed over the rows each covered: divided by
        ``n_rows``, the evaluations a row cost (``evaluations_per_row``).
    n_row_divergence_evaluations : int
        Those of them with the divergence, summed the same way.
    """

    n_evaluations: int = 0
    n_divergence_evaluations: int = 0
    max_evaluations_per_chunk: int = 0
    n_chunks: int = 0
    n_rows: int = 0
    n_row_evaluations: int = 0
    n_row_divergence_evaluations: int = 0

    @property
    def evaluations_per_row(self) -> float:
        """The mean evaluations of the field per row solved (nan if none)."""
        return self.n_row_evaluations / self.n_rows if self.n_rows else float("nan")

    def add(self, solves: list[SolveStats]) -> None:
        self.n_evaluations += sum(solve.n_evaluations for solve in solves)
        self.n_divergence_evaluations += sum(
            solve.n_divergence_evaluations for solve in solves
        )
        self.n_rows += sum(solve.n_rows for solve in solves)
        self.n_row_evaluations += sum(solve.n_row_evaluations for solve in solves)
        self.n_row_divergence_evaluations += sum(
            solve.n_row_divergence_evaluations for solve in solves
        )
        self.max_evaluations_per_chunk = max(
            [self.max_evaluations_per_chunk] + [solve.n_evaluations for solve in solves]
        )
        self.n_chunks += len(solves)


# The blocks open in this thread (or task): each counts every solve.
_OPEN_BLOCKS: ContextVar[tuple[SolverStats, ...]] = ContextVar(
    "skflow_solver_stats", default=()
)


@contextlib.contextmanager
def solver_stats() -> Iterator[SolverStats]:
    """Count the ODE solves of the scoring and sampling calls in a block.

    Scoring and sampling change nothing on the estimator; to see what they
    cost (to diagnose slow scoring, or compare solver settings), open a
    block: every ``score_samples``, ``score``, ``sample``, ``predict`` or
    ``decision_function`` call inside it, in the same thread, adds its
    solves to the :class:`SolverStats` it yields. Blocks nest, and calls
    in other threads are not counted.

    Yields
    ------
    stats : SolverStats
        Updated as the calls inside the block run: ``n_evaluations`` (of
        the vector field, summed over every solve),
        ``n_divergence_evaluations`` (those that computed the divergence
        too, each costing about d + 1 plain ones),
        ``max_evaluations_per_chunk`` (the slowest solve) and ``n_chunks``
        (the number of solves; a chunk whose adaptive solve failed counts
        once per part it was split into); per row, ``n_rows``,
        ``n_row_evaluations`` and ``n_row_divergence_evaluations`` (the
        evaluations summed over the rows each covered) and
        ``evaluations_per_row``.

    Examples
    --------
    >>> import numpy as np, skflow
    >>> X = np.random.RandomState(0).normal(size=(100, 2))
    >>> est = skflow.FlowMatchingDensity(hidden_layer_sizes=(16,), max_iter=20,
    ...                                  random_state=0).fit(X)
    >>> with skflow.solver_stats() as stats:
    ...     _ = est.score_samples(X)
    >>> stats.n_chunks, stats.n_evaluations > 0
    (1, True)
    """
    stats = SolverStats()
    token = _OPEN_BLOCKS.set((*_OPEN_BLOCKS.get(), stats))
    try:
        yield stats
    finally:
        _OPEN_BLOCKS.reset(token)


def _record(solves: list[SolveStats]) -> None:
    for stats in _OPEN_BLOCKS.get():
        stats.add(solves)


def _warn_about_failures(
    log_density: np.ndarray, n_fallbacks: int, solver: str, dtype: torch.dtype
) -> np.ndarray:
    """Warn of rows that fell back or overflowed; the latter become -inf."""
    if n_fallbacks:
        warnings.warn(
            f"The {solver} solver gave up on {n_fallbacks} row(s) "
            f"after {MAX_EVALUATIONS} field evaluations or a step-size "
            f"underflow; they were scored with {FALLBACK_STEPS} fixed rk4 "
            "steps instead and may be inaccurate (the other rows were not "
            "affected).",
            RuntimeWarning,
            stacklevel=5,  # here, log_densities, _log_density, score_samples, caller
        )
    not_finite = ~np.isfinite(log_density)
    if not_finite.any():
        warnings.warn(
            f"{not_finite.sum()} row(s) have a log density beyond the range "
            f"of {dtype}: their trajectories overflowed, so they are "
            "reported as -inf (density 0). dtype='float64' reaches further.",
            RuntimeWarning,
            stacklevel=5,  # here, log_densities, _log_density, score_samples, caller
        )
        log_density[not_finite] = -np.inf
    return log_density


def log_densities(
    field: torch.nn.Module,
    log_base_density: Callable,
    X: np.ndarray,
    *,
    standardize: Callable[[np.ndarray], np.ndarray],
    n_probes: int | None,
    probe_seed: int,
    solver: dict,
    rows_per_chunk: int,
    verbose: int,
) -> np.ndarray:
    """Log densities (standardized units) of the rows of X, chunk by chunk.

    ``standardize(X_rows)`` maps rows to the field's space; ``n_probes``
    Hutchinson probes per row (None: the exact divergence) are drawn on the
    CPU from the row's own values and ``probe_seed``
    (:func:`~skflow._row_noise.row_uniforms`), so each row's probes depend
    neither on the other rows, nor on the chunking, nor on the device.
    Returns the log densities (float64; -inf, with a warning, where they
    overflowed).
    """
    parameter = next(field.parameters())
    log_density = np.empty(X.shape[0])
    solves, n_fallbacks = [], 0
    for rows in chunks(
        X.shape[0], rows_per_chunk, task="score_samples", verbose=verbose
    ):
        z = to_tensor(standardize(X[rows]), parameter.device, parameter.dtype)
        probes = None
        if n_probes is not None:
            shape = (z.shape[0], n_probes, z.shape[1])
            uniforms = row_uniforms(X[rows], probe_seed, n_probes * z.shape[1], 1)
            signs = np.where(uniforms < 0.5, -1.0, 1.0).reshape(shape)
            probes = torch.from_numpy(signs).to(parameter.device, parameter.dtype)
        log_density[rows], chunk_solves, chunk_fallbacks = score_chunk(
            field, z, log_base_density, probes, solver
        )
        solves += chunk_solves
        n_fallbacks += chunk_fallbacks
    _record(solves)
    return _warn_about_failures(
        log_density, n_fallbacks, solver["solver"], parameter.dtype
    )


def samples(
    field: torch.nn.Module,
    noise: torch.Tensor,
    *,
    solver: dict,
    rows_per_chunk: int,
    verbose: int,
) -> np.ndarray:
    """``noise`` (on the CPU) pushed from t = 0 to t = 1, chunk by chunk:
    the points in standardized units, float64."""
    parameter = next(field.parameters())
    points = np.empty(tuple(noise.shape))
    solves = []
    for rows in chunks(noise.shape[0], rows_per_chunk, task="sample", verbose=verbose):
        x0 = noise[rows].to(parameter.device, parameter.dtype)
        x1, stats = integrate(field, x0, **solver)
        points[rows] = to_numpy(x1)
        solves.append(stats)
    _record(solves)
    return points
