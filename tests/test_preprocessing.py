"""Sample weights, standardization and its Jacobian, integer columns and
dequantization: the units the flow sees and the units the caller gets."""

import warnings

import numpy as np
import pytest
from _data import EXACT, TINY, blobs
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import kstest, norm, poisson

from skflow import FlowMatchingDensity
from skflow._preprocessing import (
    at_atoms,
    check_sample_weight,
    dequantized,
    find_atoms,
    integer_columns,
    log_jacobian,
    standardize,
    to_data_units,
)


def test_sample_weight_defaults_to_ones_and_broadcasts_a_scalar():
    assert_array_equal(check_sample_weight(None, 3), np.ones(3))
    assert_array_equal(check_sample_weight(2, 3), np.full(3, 2.0))
    weights = check_sample_weight([1, 0, 3], 3)
    assert weights.dtype == np.float64
    assert_array_equal(weights, [1.0, 0.0, 3.0])


@pytest.mark.parametrize(
    "weights, message",
    [
        # Refused on every supported scikit-learn, whose own check let an
        # all-zero vector through in some versions.
        (np.zeros(4), "Sample weights must contain at least one non-zero number"),
        (-np.ones(4), "Negative values in data passed to `sample_weight`"),
        (np.ones(3), r"sample_weight.shape == \(3,\), expected \(4,\)"),
        (np.ones((4, 1)), r"sample_weight.shape == \(4, 1\), expected \(4,\)"),
        (np.full(4, np.nan), "Input sample_weight contains NaN"),
        (np.full(4, np.inf), "Input sample_weight contains infinity"),
    ],
    ids=["all-zero", "negative", "short", "2-d", "nan", "inf"],
)
def test_bad_sample_weights_get_scikit_learns_messages(weights, message):
    with pytest.raises(ValueError, match=message):
        check_sample_weight(weights, 4)


def test_integer_columns_are_those_of_whole_numbers_below_two_to_the_52():
    X = np.column_stack(
        [
            [0.0, -3.0, 7.0],  # whole, negative too
            [4.0, 4.0, 4.0],  # constant and whole
            [0.0, 0.5, 1.0],  # one fractional value
            [2.0**52, 0.0, 1.0],  # whole only because float64 has no fraction
            [1e30, -1e30, 0.0],
        ]
    )
    assert_array_equal(integer_columns(X), [True, True, False, False, False])


def test_standardization_is_weighted_and_leaves_constant_columns_unscaled():
    rng = np.random.RandomState(0)
    X = np.column_stack([rng.normal(3.0, 2.0, 500), np.full(500, 7.5)])
    weights = rng.uniform(0, 2, 500)
    mean, scale, constant = standardize(X, weights, np.zeros(2, bool))
    expected_mean = np.average(X, axis=0, weights=weights)
    assert_allclose(mean, expected_mean, rtol=1e-12)
    variance = np.average((X[:, 0] - expected_mean[0]) ** 2, weights=weights)
    assert scale[0] == pytest.approx(np.sqrt(variance), rel=1e-12)
    assert_array_equal(constant, [False, True])
    assert scale[1] == 1.0


def test_a_column_constant_up_to_round_off_is_constant():
    # As StandardScaler: spread below 10 eps |mean| is round-off.
    column = 1e8 + np.array([0.0, 1e-8, -1e-8, 0.0])
    _, scale, constant = standardize(column[:, None], np.ones(4), np.zeros(1, bool))
    assert constant[0] and scale[0] == 1.0


def test_dequantized_columns_are_standardized_as_x_plus_uniform_noise():
    # X + U, U ~ U[0, 1): the mean moves by 1/2 and the variance grows by
    # 1/12, so a constant whole column is not constant once dequantized.
    X = np.column_stack([np.arange(10.0), np.full(10, 4.0)])
    mean, scale, constant = standardize(X, np.ones(10), np.array([True, True]))
    assert_allclose(mean, [5.0, 4.5])
    assert_allclose(scale**2, [np.var(np.arange(10.0)) + 1 / 12, 1 / 12])
    assert not constant.any()


def test_standardization_by_blocks_equals_the_one_pass_result():
    X = blobs(1000, 3)
    weights = np.random.RandomState(1).uniform(size=1000)
    mask = np.zeros(3, bool)
    whole = standardize(X, weights, mask)
    blocks = standardize(X, weights, mask, block_rows=7)
    # Sums in another order: round-off only.
    for one, other in zip(whole, blocks, strict=True):
        assert_allclose(other, one, rtol=1e-12)


def test_log_jacobian_moves_a_log_density_to_the_callers_units():
    # x = 3 z + 1 for z ~ N(0, 1): log p(x) = log N(z) - log 3.
    scale = np.array([3.0])
    x = np.array([-2.0, 0.5, 4.0])
    z = (x - 1.0) / scale
    assert_allclose(norm.logpdf(z) + log_jacobian(scale), norm(1.0, 3.0).logpdf(x))
    assert log_jacobian(np.array([2.0, 0.5, 4.0])) == pytest.approx(-np.log(4.0))


def test_samples_of_integer_columns_are_rounded_down():
    Z = np.array([[0.25, 0.25], [-0.75, -0.75], [0.999, 0.999]])
    mean, scale = np.array([1.0, 1.0]), np.array([2.0, 2.0])
    X = to_data_units(Z, mean, scale, np.array([True, False]))
    # The discrete model puts the mass of [k, k + 1) on k, negatives too.
    assert_array_equal(X[:, 0], [1.0, -1.0, 2.0])
    assert_allclose(X[:, 1], [1.5, -0.5, 2.998])
    assert_allclose(to_data_units(Z, mean, scale, None), Z * scale + mean)


def test_dequantization_adds_uniform_noise_to_integer_columns_only():
    X = blobs(1000, 3)
    noisy = dequantized(X, np.array([True, False, True]), seed=0)
    assert_array_equal(noisy[:, 1], X[:, 1])  # bitwise unchanged
    noise = noisy[:, [0, 2]] - X[:, [0, 2]]
    assert noise.min() >= 0 and noise.max() < 1
    # U[0, 1) has mean 1/2: 2,000 draws pin it to about 0.006.
    assert noise.mean() == pytest.approx(0.5, abs=0.03)
    assert dequantized(X, None, seed=0) is X
    assert dequantized(X, np.zeros(3, bool), seed=0) is X


def test_a_rows_noise_depends_on_its_values_and_the_seed_only():
    X = np.random.RandomState(0).poisson(3.0, (20, 2)).astype(float)
    mask = np.array([True, True])
    both = dequantized(X, mask, seed=0)
    # Not on the mask, the other rows, their order, or a duplicate beside it.
    assert_array_equal(dequantized(X, np.array([True, False]), 0)[:, 0], both[:, 0])
    assert_array_equal(dequantized(X[::-1], mask, 0), both[::-1])
    assert_array_equal(dequantized(X[[3, 3]], mask, 0), both[[3, 3]])
    # Another seed, other draws.
    assert not np.any(dequantized(X, mask, seed=1) == both)
    # A conditional model draws from its whole rows [y, x]: rows equal in
    # y but not in x get different noise.
    y = np.zeros((2, 1))
    rows = np.array([[0.0, 1.0], [0.0, 2.0]])
    noisy_y = dequantized(y, np.array([True]), 0, rows=rows)
    assert noisy_y[0, 0] != noisy_y[1, 0]


def test_which_columns_the_estimator_dequantizes():
    rng = np.random.RandomState(0)
    whole = rng.poisson(3.0, 200).astype(float)
    X = np.column_stack(
        [
            whole,
            np.full(200, 4.0),  # constant, but whole: uniform on [4, 5)
            1e30 * rng.normal(size=200),  # whole only because it is huge
            whole + 0.5,
        ]
    )
    params = {**TINY, "max_iter": 5, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the constant whole column is not constant
        est = FlowMatchingDensity(**params).fit(X)
    assert_array_equal(est.integer_columns_, [True, True, False, False])
    assert est.scale_[1] == pytest.approx(np.sqrt(1 / 12))
    est = FlowMatchingDensity(**params, dequantize=False).fit(X[:, [0, 2, 3]])
    assert_array_equal(est.integer_columns_, [False, False, False])
    assert est.mean_[0] == pytest.approx(whole.mean())


def _counts_and_reals(n, seed):
    rng = np.random.RandomState(seed)
    return np.column_stack([rng.poisson(3.0, n), rng.normal(size=n)])


def test_a_discrete_rows_score_depends_on_that_row_alone():
    X = _counts_and_reals(100, 0)
    X[1] = X[0]  # a duplicate
    est = FlowMatchingDensity(**EXACT, dequantize=True, random_state=0).fit(X)
    scores = est.score_samples(X)
    # Float64 fixed steps: only the matrix products' round-off may differ.
    assert scores[1] == pytest.approx(scores[0], rel=1e-12)
    order = np.random.RandomState(0).permutation(len(X))
    assert_allclose(est.score_samples(X[order]), scores[order], rtol=1e-10)
    assert_allclose(est.score_samples(X[5:6]), scores[5:6], rtol=1e-10)
    est.set_params(inference_batch_size=7)
    assert_allclose(est.score_samples(X), scores, rtol=1e-10)
    # The same call twice gives the same draws.
    assert_array_equal(est.score_samples(X), est.score_samples(X))


@pytest.mark.slow
def test_integer_columns_are_discrete_by_default():
    X = _counts_and_reals(2000, 0)
    est = FlowMatchingDensity(
        hidden_layer_sizes=(64, 64),
        max_iter=1500,
        dtype="float64",
        random_state=0,
    ).fit(X)
    assert_array_equal(est.integer_columns_, [True, False])
    # Standardized as X + U: the mean of a count column moves by 1/2.
    assert est.mean_[0] == pytest.approx(X[:, 0].mean() + 0.5)

    X_test = _counts_and_reals(2000, 1)
    scores = est.score_samples(X_test)
    # A lower bound on log P(count) + log p(real): it cannot beat the truth
    # on average by more than the sampling error (0.03 at 2,000 rows), and
    # a reasonable fit comes within 0.15 nats of it.
    truth = poisson.logpmf(X_test[:, 0], 3.0) - 0.5 * (
        X_test[:, 1] ** 2 + np.log(2 * np.pi)
    )
    assert scores.mean() < truth.mean() + 0.03
    assert scores.mean() > truth.mean() - 0.15

    samples = est.sample(500, random_state=0)
    assert_array_equal(samples[:, 0], np.floor(samples[:, 0]))
    assert not np.array_equal(samples[:, 1], np.floor(samples[:, 1]))


def test_atoms_are_the_values_carrying_a_share_of_their_columns_weight():
    X = np.column_stack(
        [
            np.r_[np.zeros(10), np.linspace(1, 2, 90)],  # an atom at 0
            np.r_[np.full(4, 0.5), np.full(6, 1.5), np.linspace(2, 3, 90)],
            np.arange(100.0),  # an integer column: skipped
            np.linspace(0, 1, 100),  # no value repeats
        ]
    )
    skip = np.array([False, False, True, False])
    atoms = find_atoms(X, np.ones(100), skip, 0.05, 2)
    # Column 1: 0.5 holds 4% of the rows (not an atom), 1.5 holds 6%.
    assert atoms.shape == (4, 1)
    assert_array_equal(atoms[:2, 0], [0.0, 1.5])
    assert np.isnan(atoms[2:]).all()
    # The weights decide: the four rows at 0.5, weighing 20 each, carry 45%
    # of the weight, and the six at 1.5 then only 3%.
    weights = np.r_[np.full(4, 20.0), np.ones(96)]
    atoms = find_atoms(X, weights, skip, 0.05, 2)
    assert_array_equal(atoms[1][~np.isnan(atoms[1])], [0.5])
    # No atom anywhere: zero columns.
    assert find_atoms(X[:, 3:], np.ones(100), skip[3:], 0.05, 2).shape == (1, 0)
    # Levels: 20 values at most, every row but 4% on the atoms, or three
    # atoms (a rounding's levels); two atoms in a continuous column stay.
    levels = np.tile(np.arange(20) + 0.5, 5)
    near_levels = np.r_[np.tile([0.5, 1.5, 2.5, 3.5], 24), np.linspace(5, 6, 4)]
    three = np.r_[np.repeat([0.5, 1.5, 2.5], 6), np.linspace(5, 6, 82)]
    columns = np.column_stack([levels, near_levels, three])
    assert find_atoms(columns, np.ones(100), np.zeros(3, bool), 0.05, 2).shape == (
        3,
        0,
    )
    atoms = find_atoms(columns[:, 2:], np.ones(100), np.zeros(1, bool), 0.05, 3)
    assert_array_equal(atoms, [[0.5, 1.5, 2.5]])


def test_entries_at_atoms_spread_uniformly_over_their_cells_and_others_stay():
    rng = np.random.default_rng(0)
    n = 4000
    X = np.column_stack(
        [
            np.where(rng.random(n) < 0.4, 0.0, rng.normal(3, 1, n)),
            rng.integers(0, 4, n).astype(float),
            np.where(rng.random(n) < 0.3, 2.5, rng.normal(size=n)),
            rng.normal(size=n),  # every row distinct: no two share a draw
        ]
    )
    integer = np.array([False, True, False, False])
    atoms = find_atoms(X, np.ones(n), integer, 0.05, 2)
    widths = np.array([2.0, 1.0, 0.5, 1.0])
    moved = dequantized(X, integer, seed=3, atoms=atoms, atom_widths=widths)
    on = at_atoms(X, atoms)
    # Data scored as float32 find the atoms of a float64 fit.
    tenths = np.where(on, X + 0.1, X)
    assert_array_equal(at_atoms(tenths.astype(np.float32), atoms + 0.1), on)
    assert on[:, 0].mean() > 0.3 and on[:, 2].mean() > 0.2
    assert not on[:, [1, 3]].any()
    # Off the atoms the continuous entries are untouched.
    assert_array_equal(moved[~on[:, 0], 0], X[~on[:, 0], 0])
    assert_array_equal(moved[~on[:, 2], 2], X[~on[:, 2], 2])
    # On them, uniform over (atom - w / 2, atom + w / 2) (KS, p > 1e-3).
    for column, atom in ((0, 0.0), (2, 2.5)):
        cell = (moved[on[:, column], column] - atom) / widths[column] + 0.5
        assert kstest(cell, "uniform").pvalue > 1e-3
    # The integer column is dequantized as before.
    assert_array_equal(moved[:, 1], dequantized(X, integer, seed=3)[:, 1])
    # A row's draw is its own: alone, in another order, duplicated.
    rows = [5, 0, 5, 17]
    assert_array_equal(
        dequantized(X[rows], integer, seed=3, atoms=atoms, atom_widths=widths),
        moved[rows],
    )
