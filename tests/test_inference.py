"""Chunked inference: chunk sizes, failure isolation, solver statistics."""

import numpy as np
import pytest
import torch

from skflow import _inference
from skflow._inference import (
    FALLBACK_STEPS,
    chunks,
    rows_per_chunk,
    solve_isolating_failures,
    solver_stats,
)
from skflow._ode import SolveFailedError, SolveStats

ADAPTIVE = {"solver": "dopri5", "n_steps": None, "rtol": 1e-6, "atol": 1e-7}


def _solve_failing_on(bad_rows):
    """A fake solve: an adaptive solve of a slice holding any of ``bad_rows``
    fails; every other solve returns the rows' indices and its options."""

    def solve(rows, **options):
        indices = np.arange(rows.start, rows.stop)
        if options["solver"] != "rk4" and np.isin(indices, list(bad_rows)).any():
            raise SolveFailedError("the fake solver gave up")
        return indices, options

    return solve


def _isolated(n_rows, bad_rows, start=0):
    return list(
        solve_isolating_failures(
            _solve_failing_on(bad_rows), n_rows=n_rows, solver=ADAPTIVE, start=start
        )
    )


def test_a_solve_that_does_not_fail_is_one_solve_of_every_row():
    [(rows, indices, options, fell_back)] = _isolated(10, bad_rows=[])
    assert rows == slice(0, 10)
    np.testing.assert_array_equal(indices, np.arange(10))
    assert options == ADAPTIVE and not fell_back


def test_only_the_failing_rows_fall_back_to_fixed_steps():
    results = _isolated(16, bad_rows={5, 11})
    # Halving from 16 rows: the largest halves that hold no failing row
    # are solved whole, and only rows 5 and 11 are solved on their own.
    assert [rows for rows, *_ in results] == [
        slice(0, 4),
        slice(4, 5),
        slice(5, 6),
        slice(6, 8),
        slice(8, 10),
        slice(10, 11),
        slice(11, 12),
        slice(12, 16),
    ]
    fell_back = {rows.start for rows, _, _, fell_back in results if fell_back}
    assert fell_back == {5, 11}
    for rows, indices, options, fell_back in results:
        # Each result belongs to its own slice.
        np.testing.assert_array_equal(indices, np.arange(rows.start, rows.stop))
        if fell_back:
            assert options == {**ADAPTIVE, "solver": "rk4", "n_steps": FALLBACK_STEPS}
        else:
            assert options == ADAPTIVE


@pytest.mark.parametrize(
    "n_rows, bad_rows, start",
    [(5, {4}, 0), (7, {0, 1, 2, 3, 4, 5, 6}, 0), (9, {12, 13}, 10), (1, {3}, 3)],
    ids=["odd", "all-fail", "offset", "one-row"],
)
def test_isolated_solves_cover_every_row_once_in_order(n_rows, bad_rows, start):
    results = _isolated(n_rows, bad_rows, start)
    covered = np.concatenate([indices for _, indices, _, _ in results])
    np.testing.assert_array_equal(covered, np.arange(start, start + n_rows))
    fell_back = [rows.start for rows, _, _, fell_back in results if fell_back]
    assert fell_back == sorted(bad_rows)
    assert all(rows.stop - rows.start == 1 for rows, *_, back in results if back)


def test_rows_per_chunk_is_the_parameter_when_it_is_an_int():
    assert rows_per_chunk(7, 256, 16, torch.device("cpu")) == 7


def test_auto_chunks_fit_the_devices_budget():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # no GPU needed
    on_cpu = rows_per_chunk("auto", 256, 4, cpu)
    on_cuda = rows_per_chunk("auto", 256, 4, cuda)
    # The largest tensor of a chunk, (rows, directions, width), stays within
    # the budget: smaller on the CPU, larger launches on an accelerator.
    assert on_cpu * 4 * 256 <= 2**22 < (on_cpu + 1) * 4 * 256
    assert on_cuda * 4 * 256 <= 2**25 < (on_cuda + 1) * 4 * 256
    # More directions (the exact divergence in more features) or wider
    # layers mean fewer rows, down to a floor of 64.
    assert rows_per_chunk("auto", 256, 8, cpu) == on_cpu // 2
    assert rows_per_chunk("auto", 4096, 4096, cpu) == 64
    # Hutchinson's n_probes or sampling's 1 direction; 0 counts as one.
    assert rows_per_chunk("auto", 256, 0, cpu) == rows_per_chunk("auto", 256, 1, cpu)


@pytest.mark.parametrize("n_rows, size", [(10, 3), (9, 3), (1, 5), (5, 5)])
def test_chunks_cover_the_rows_in_slices_of_at_most_size(n_rows, size):
    slices = list(chunks(n_rows, size, task="test", verbose=0))
    assert all(0 < part.stop - part.start <= size for part in slices)
    covered = np.concatenate([np.arange(n_rows)[part] for part in slices])
    np.testing.assert_array_equal(covered, np.arange(n_rows))
    assert len(slices) == -(-n_rows // size)  # ceil


def test_chunks_show_a_bar_only_when_verbose_and_several(capsys):
    list(chunks(10, 3, task="score_samples", verbose=1))
    assert "score_samples: 100%" in capsys.readouterr().err
    list(chunks(10, 10, task="score_samples", verbose=1))  # one chunk
    list(chunks(10, 3, task="score_samples", verbose=0))
    assert capsys.readouterr() == ("", "")


def test_solver_stats_sum_the_solves_recorded_in_the_block():
    solves = [SolveStats(30, 30), SolveStats(120, 45), SolveStats(64)]
    _inference._record(solves[:1])  # outside any block: counted nowhere
    with solver_stats() as outer:
        _inference._record(solves[:2])
        with solver_stats() as inner:
            _inference._record(solves[2:])
    _inference._record(solves)  # after the block: not counted
    assert (
        outer.n_evaluations,
        outer.n_divergence_evaluations,
        outer.max_evaluations_per_chunk,
        outer.n_chunks,
    ) == (214, 75, 120, 3)
    assert (inner.n_evaluations, inner.n_chunks) == (64, 1)


def test_solver_stats_count_their_own_thread_only():
    import threading

    with solver_stats() as stats:
        worker = threading.Thread(target=_inference._record, args=([SolveStats(9)],))
        worker.start()
        worker.join()
        _inference._record([SolveStats(5)])
    assert (stats.n_evaluations, stats.n_chunks) == (5, 1)


def _warn_about_failures(log_density, n_fallbacks):
    # Private to _inference (its stack level is fixed for the callers of
    # score_samples); what it does to the scores is tested here.
    return _inference._warn_about_failures(
        log_density, n_fallbacks, "dopri5", torch.float32
    )


def test_rows_beyond_the_dtypes_range_become_minus_inf_with_a_warning():
    log_density = np.array([-1.0, np.nan, -2.0, np.inf, -np.inf])
    with pytest.warns(RuntimeWarning) as record:
        result = _warn_about_failures(log_density, n_fallbacks=0)
    assert len(record) == 1
    assert "3 row(s) have a log density beyond the range of torch.float32" in str(
        record[0].message
    )
    np.testing.assert_array_equal(result, [-1.0, -np.inf, -2.0, -np.inf, -np.inf])


def test_fallbacks_are_reported_and_finite_rows_left_alone():
    log_density = np.array([-1.0, -2.0])
    with pytest.warns(RuntimeWarning, match="dopri5 solver gave up on 2 row") as record:
        result = _warn_about_failures(log_density.copy(), n_fallbacks=2)
    assert len(record) == 1
    assert f"{FALLBACK_STEPS} fixed rk4 steps" in str(record[0].message)
    np.testing.assert_array_equal(result, log_density)
