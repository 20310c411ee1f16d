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
