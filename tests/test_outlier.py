"""FlowMatchingOutlierDetector: thresholds and scikit-learn's outlier API."""

import inspect

import numpy as np
import pytest
from _data import SMALL, TINY
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from skflow import FlowMatchingDensity, FlowMatchingOutlierDetector

# Thresholds need a model that has learnt the Gaussian: 300 steps, with the
# default held-out split and early stopping.
TRAINED = {**SMALL, "max_iter": 300, "batch_size": 128, "n_iter_no_change": 10}


def _gaussian(n, seed):
    return np.random.RandomState(seed).normal(size=(n, 2)) * [1.0, 0.5]


def test_detector_exposes_every_density_parameter_and_documents_it():
    density = set(FlowMatchingDensity().get_params())
    detector = FlowMatchingOutlierDetector().get_params()
    assert set(detector) == density | {"contamination"}
    # Same defaults, and every parameter appears in the assembled docstring.
    defaults = FlowMatchingDensity().get_params()
    assert all(detector[name] == value for name, value in defaults.items())
    # Arguments reach the density estimator's attributes.
    detector = FlowMatchingOutlierDetector(max_iter=7, sigma=0.3, contamination=0.2)
    assert (detector.max_iter, detector.sigma, detector.contamination) == (7, 0.3, 0.2)
    doc = FlowMatchingOutlierDetector.__doc__
    for name in detector.get_params():
        assert f"\n    {name} : " in doc, name
    assert "offset_ : float" in doc and "vector_field_ : torch.nn.Module" in doc


def test_float_contamination_flags_that_share_of_the_training_data():
    X = _gaussian(400, 0)
    detector = FlowMatchingOutlierDetector(**TRAINED, contamination=0.1, random_state=0)
    labels = detector.fit_predict(X)
    # offset_ is the 10% quantile of the training scores: 40 of 400 below it.
    assert np.sum(labels == -1) == pytest.approx(40, abs=1)
    assert_array_equal(labels, detector.predict(X))


@pytest.mark.slow
def test_auto_threshold_is_the_models_one_percent_density_level():
    # The model's own 1% tail: about 1% of fresh draws of the model fall
    # below it. The threshold is a quantile of 4000 other draws, so the
    # share flagged has a spread of about sqrt(2) x 0.16% (binomial at
    # n = 4000, twice): the bounds are 2.7 of those from 1%. Fresh points
    # of the true density would only be flagged at 1% by a model close to
    # it, which a 300-step fit is not (test KL about 0.2 nats).
    X = _gaussian(2000, 0)
    detector = FlowMatchingOutlierDetector(**TRAINED, random_state=0).fit(X)
    draws = detector.sample(4000, random_state=1)
    flagged = np.mean(detector.predict(draws) == -1)
    assert 0.004 < flagged < 0.016
    # Points far from the data are outliers.
    assert_array_equal(detector.predict([[8.0, 0.0], [0.0, -6.0]]), [-1, -1])


def test_decision_function_is_score_minus_offset():
    X = _gaussian(300, 0)
    detector = FlowMatchingOutlierDetector(
        **TRAINED, contamination=0.05, random_state=0
    )
    detector.fit(X)
    scores = detector.score_samples(X)
    assert_allclose(detector.decision_function(X), scores - detector.offset_)
    assert_array_equal(detector.predict(X), np.where(scores >= detector.offset_, 1, -1))


@pytest.mark.parametrize("contamination", [0.0, 0.6, "high"])
def test_invalid_contamination_raises(contamination):
    with pytest.raises(InvalidParameterError, match="contamination"):
        FlowMatchingOutlierDetector(contamination=contamination).fit(_gaussian(50, 0))


def test_grid_search_over_sigma_by_likelihood():
    search = GridSearchCV(
        FlowMatchingOutlierDetector(**TINY, random_state=0),
        {"sigma": [0.01, 0.1]},
        cv=2,
    ).fit(_gaussian(100, 0))
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


def test_init_signature_matches_the_density_estimator():
    density = inspect.signature(FlowMatchingDensity.__init__).parameters
    detector = inspect.signature(FlowMatchingOutlierDetector.__init__).parameters
    for name, parameter in density.items():
        assert detector[name].default == parameter.default


def _zero_inflated(n, seed):
    """Column 0: 0 for half the rows (an atom), N(3, 1) for the others."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    X[:, 0] = np.where(rng.random(n) < 0.5, 0.0, X[:, 0] + 3.0)
    return X


def test_the_detector_spreads_atoms_so_rows_on_them_do_not_look_typical():
    # A density of the values as they are puts a spike about sigma wide on
    # the atom: every row there scores far above the others (up to about 4
    # nats, log(0.5 / (0.01 * 1.66 * 2.5)) - E[log(0.5 N(3, 1))], once the
    # spike is learnt; these 300 steps learn most of it). Spread over a
    # cell one standard deviation (1.66) wide, the atom's density is
    # 0.5 / 1.66, about 0.9 nats above the other rows' mean.
    X, X_test = _zero_inflated(600, 0), _zero_inflated(400, 1)
    on_atom = X_test[:, 0] == 0
    gaps = []
    for estimator in (
        FlowMatchingDensity(**TRAINED, random_state=0),
        FlowMatchingOutlierDetector(**TRAINED, contamination=0.1, random_state=0),
    ):
        scores = estimator.fit(X).score_samples(X_test)
        gaps.append(scores[on_atom].mean() - scores[~on_atom].mean())
    density_gap, detector_gap = gaps
    assert detector_gap < 1.5
    assert density_gap > detector_gap + 1.0


def test_atoms_follow_dequantize_and_rows_score_on_their_own():
    X = _zero_inflated(300, 0)
    X = np.column_stack([X, np.arange(300) % 4])  # an integer column
    detector = FlowMatchingOutlierDetector(**TINY, contamination=0.1, random_state=0)
    detector.fit(X)
    assert_array_equal(detector.atoms_, [[0.0], [np.nan], [np.nan]])
    # A row at the atom scores the same alone, duplicated and in a batch
    # (float32 round-off of the batched products moves the adaptive steps
    # within rtol = atol = 1e-6, far inside 1e-4).
    rows = X[[3, 0, 3, 7]]
    batch = detector.score_samples(rows)
    alone = [detector.score_samples(row[None])[0] for row in rows]
    assert_allclose(batch, alone, rtol=0, atol=1e-4)
    assert batch[0] == batch[2]
    # dequantize=False models every column as continuous: no atoms.
    plain = FlowMatchingOutlierDetector(
        **TINY, contamination=0.1, dequantize=False, random_state=0
    )
    assert plain.fit(X).atoms_.shape == (3, 0)
    # The density estimator keeps the atoms as they are.
    assert not hasattr(FlowMatchingDensity(**TINY, random_state=0).fit(X), "atoms_")
