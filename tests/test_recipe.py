"""The training recipe: one frozen dataclass of every training constant,
read by the estimator from its class."""

import dataclasses

import numpy as np
import pytest
from _data import TINY, blobs

from skflow import FlowMatchingDensity
from skflow._recipe import Recipe


def test_the_recipe_is_frozen():
    recipe = Recipe()
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.time_skew = 0.0
    assert dataclasses.replace(recipe, time_skew=0.0).time_skew == 0.0
    assert recipe.time_skew == Recipe().time_skew


def test_the_estimator_reads_the_default_recipe():
    assert FlowMatchingDensity._recipe == Recipe()
    assert FlowMatchingDensity()._recipe == Recipe()


def test_auto_steps_grow_with_the_square_root_of_the_rows_between_floor_and_cap():
    # The constants spelled out: the test does not follow the defaults.
    recipe = Recipe(
        auto_steps_per_sqrt_row=70, auto_steps_min=2000, auto_steps_max=20_000
    )
    assert recipe.max_iter(50) == 2000  # 70 sqrt(50) = 495, raised to the floor
    assert recipe.max_iter(10_000) == 7000
    assert recipe.max_iter(10**8) == 20000  # 700,000, cut to the cap
    fewer = dataclasses.replace(recipe, auto_steps_per_sqrt_row=10)
    assert fewer.max_iter(10**6) == 10000


def test_an_int_max_iter_is_taken_as_it_is_and_auto_from_the_recipe():
    assert FlowMatchingDensity(max_iter=7)._max_iter(10**6) == 7
    auto = FlowMatchingDensity(max_iter="auto")
    assert auto._max_iter(10_000) == Recipe().max_iter(10_000)


def test_short_fits_are_not_made_mostly_of_validation_checks():
    recipe = Recipe(validation_checks=25, validation_min_steps_between=80)
    assert recipe.validation_every(2000) == 80  # 25 checks
    assert recipe.validation_every(20_000) == 800  # still 25
    assert recipe.validation_every(200) == 80  # not every 8 steps


def test_fourier_frequencies_shrink_above_two_features():
    recipe = Recipe(fourier_scale_factor=1.0)
    assert recipe.fourier_scale(1) == recipe.fourier_scale(2) == 4.0
    assert recipe.fourier_scale(8) == pytest.approx(4.0 / 8)  # (2 / 8)^1.5 = 1/8
    halved = dataclasses.replace(recipe, fourier_scale_factor=0.5)
    assert halved.fourier_scale(2) == 2.0


class _WithoutFourierFeatures(FlowMatchingDensity):
    _recipe = dataclasses.replace(Recipe(), n_fourier_features=0, activation="silu")


def test_a_subclass_with_its_own_recipe_builds_and_fits_its_network():
    X = blobs(100)
    est = _WithoutFourierFeatures(**TINY, random_state=0).fit(X)
    assert est.vector_field_.fourier_features.n_outputs == 0
    assert est.vector_field_.activation == "silu"
    assert np.all(np.isfinite(est.score_samples(X)))
    # The parent class keeps its own recipe.
    field = FlowMatchingDensity(**TINY, random_state=0).fit(X).vector_field_
    assert field.fourier_features.n_outputs == Recipe().n_fourier_features
    assert field.activation == Recipe().activation


@pytest.mark.slow
def test_an_auto_fit_takes_the_floor_of_steps_with_25_checks():
    X = np.random.RandomState(0).normal(size=(50, 2))
    est = FlowMatchingDensity(
        **{**TINY, "max_iter": "auto"}, n_iter_no_change=1000, random_state=0
    ).fit(X)
    # 70 sqrt(50) = 495 steps, raised to the floor of 2000, checked every 80.
    assert est.n_iter_ == len(est.loss_curve_) == 2000
    assert len(est.validation_scores_) == 25


def test_auto_sigma_shrinks_with_the_rows_and_grows_with_the_features():
    # The constants spelled out: the test does not follow the defaults.
    recipe = Recipe(auto_sigma_scale=1.3, auto_sigma_rate=0.3)
    assert recipe.sigma(200, 2) == pytest.approx(1.3 * 200 ** -(1 / 6 + 0.3))
    assert recipe.sigma(10_000, 2) < recipe.sigma(1000, 2) < recipe.sigma(200, 2)
    assert recipe.sigma(1000, 2) < recipe.sigma(1000, 10) < recipe.sigma(1000, 64)


def test_auto_sigma_is_kept_as_sigma_and_counts_rows_by_their_weights():
    X = blobs(n=40)
    fitted = FlowMatchingDensity(**TINY, sigma="auto", random_state=0).fit(X)
    assert fitted.sigma_ == fitted.path_.sigma == Recipe().sigma(40, 2)
    # Equal weights, whatever their scale, leave the 40 rows.
    scaled = FlowMatchingDensity(**TINY, sigma="auto", random_state=0).fit(
        X, sample_weight=np.full(40, 1e-6)
    )
    assert scaled.sigma_ == pytest.approx(Recipe().sigma(40, 2), rel=1e-12)
    # Half the weight on one row: Kish's effective number of rows,
    # (sum w)^2 / sum w^2 = 78^2 / (39^2 + 39) = 3.9.
    weights = np.r_[39.0, np.ones(39)]
    n_effective = weights.sum() ** 2 / np.square(weights).sum()
    assert n_effective == pytest.approx(3.9)
    heavy = FlowMatchingDensity(**TINY, sigma="auto", random_state=0).fit(
        X, sample_weight=weights
    )
    assert heavy.sigma_ == pytest.approx(Recipe().sigma(n_effective, 2), rel=1e-12)
    assert heavy.sigma_ > fitted.sigma_
    # A number is taken as it is.
    fixed = FlowMatchingDensity(**TINY, sigma=0.05, random_state=0).fit(X)
    assert fixed.sigma_ == fixed.path_.sigma == 0.05
