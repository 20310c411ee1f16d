"""Random numbers drawn from each row's own values: uniform, independent
across draws, streams and seeds, and a function of the row alone."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from scipy.stats import kstest

from skflow._row_noise import row_uniforms


def _rows(n=5000, d=3, seed=0):
    return np.random.RandomState(seed).poisson(4.0, (n, d)).astype(float)


def test_draws_are_uniform_on_the_unit_interval():
    X = np.unique(_rows(), axis=0)  # distinct rows: independent draws
    draws = row_uniforms(X, seed=7, n_draws=4)
    assert draws.shape == (len(X), 4)
    assert draws.min() >= 0 and draws.max() < 1
    for column in draws.T:
        # A Kolmogorov-Smirnov test at 1e-3: a sound generator fails one
        # column in a thousand runs, a biased one (e.g. a hash whose top
        # bits barely move) fails every time.
        assert kstest(column, "uniform").pvalue > 1e-3


def test_draws_are_uncorrelated_across_draws_streams_and_seeds():
    X = np.unique(_rows(), axis=0)
    draws = row_uniforms(X, seed=0, n_draws=2)
    others = [
        draws[:, 1],
        row_uniforms(X, seed=0, n_draws=1, stream=1)[:, 0],
        row_uniforms(X, seed=1, n_draws=1)[:, 0],
    ]
    # The correlation of n independent uniform pairs has standard deviation
    # 1 / sqrt(n), about 0.02 here: 5 of those is a bound no sound draw
    # breaks by chance.
    bound = 5 / np.sqrt(len(X))
    for other in others:
        assert abs(np.corrcoef(draws[:, 0], other)[0, 1]) < bound
        assert not np.any(draws[:, 0] == other)


def test_a_rows_draws_depend_on_its_values_alone():
    X = _rows(50)
    draws = row_uniforms(X, seed=3, n_draws=2)
    order = np.random.RandomState(0).permutation(len(X))
    assert_array_equal(row_uniforms(X[order], 3, 2), draws[order])
    assert_array_equal(row_uniforms(X[7:8], 3, 2), draws[7:8])
    # More draws extend the same stream.
    assert_array_equal(row_uniforms(X, 3, 5)[:, :2], draws)
    # The same values as float32 or with -0.0 draw the same numbers.
    assert_array_equal(row_uniforms(X.astype(np.float32), 3, 2), draws)
    assert_array_equal(
        row_uniforms(-np.zeros((1, 2)), 3, 1), row_uniforms(np.zeros((1, 2)), 3, 1)
    )
    # Any change of a value changes every draw of its row.
    moved = X.copy()
    moved[:, 1] += 1
    assert not np.any(row_uniforms(moved, 3, 2) == draws)


@pytest.mark.parametrize("seed", [0, 2**32 - 1])
def test_any_seed_of_the_estimators_range_works(seed):
    draws = row_uniforms(np.ones((3, 2)), seed, 2)
    assert np.all((draws >= 0) & (draws < 1))
