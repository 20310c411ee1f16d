"""Failing and interrupted training: errors that name the fix, models kept."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import skflow._training
from skflow import FlowMatchingDensity, FlowMatchingOutlierDetector

TINY = {"hidden_layer_sizes": (16, 16), "max_iter": 60, "batch_size": 32}
# Adam moves each weight by about the learning rate per step: at 1e8 the
# activations overflow float32 within two steps.
EXPLODING = {**TINY, "learning_rate": 1e8}


def _blobs(n=100, d=2, seed=0):
    return np.random.RandomState(seed).normal(size=(n, d))


def test_diverging_training_raises_an_error_naming_the_fixes():
    with pytest.raises(FloatingPointError, match="diverged") as error:
        FlowMatchingDensity(**EXPLODING, random_state=0).fit(_blobs())
    message = str(error.value)
    assert "learning_rate (now 1e+08)" in message
    assert "dtype='float64'" in message


def test_a_failed_refit_keeps_the_previous_model():
    X = _blobs()
    est = FlowMatchingDensity(**TINY, random_state=0).fit(X)
    scores = est.score_samples(X)
    before = dict(vars(est))
    # A refit on other data (3 columns) that diverges.
    est.set_params(learning_rate=1e8)
    with pytest.raises(FloatingPointError):
        est.fit(_blobs(d=3))
    assert est.n_features_in_ == 2
    assert set(vars(est)) == set(before)
    assert est.vector_field_ is before["vector_field_"]
    assert_array_equal(est.score_samples(X), scores)


def _interrupt_at(monkeypatch, step):
    """Make the learning-rate schedule raise KeyboardInterrupt at ``step``."""
    schedule = skflow._training._learning_rate_factor

    def interrupting(max_iter, warmup_fraction):
        factor = schedule(max_iter, warmup_fraction)

        def interrupted(current):
            if current == step:
                raise KeyboardInterrupt
            return factor(current)

        return interrupted

    monkeypatch.setattr(skflow._training, "_learning_rate_factor", interrupting)


def test_keyboard_interrupt_keeps_the_model_trained_so_far(monkeypatch):
    X = _blobs()
    _interrupt_at(monkeypatch, step=20)
    with pytest.warns(UserWarning, match="interrupted after 19 of 60 steps"):
        est = FlowMatchingDensity(**TINY, random_state=0).fit(X)
    assert est.n_iter_ == len(est.loss_curve_) == 19
    assert np.all(np.isfinite(est.score_samples(X)))
    assert est.sample(5, random_state=0).shape == (5, 2)


def test_keyboard_interrupt_before_the_first_step_propagates(monkeypatch):
    X = _blobs()
    est = FlowMatchingDensity(**TINY, random_state=0).fit(X)
    scores = est.score_samples(X)
    _interrupt_at(monkeypatch, step=1)  # inside the first step
    with pytest.raises(KeyboardInterrupt):
        est.fit(_blobs(d=3))
    assert est.n_features_in_ == 2
    assert_array_equal(est.score_samples(X), scores)


def test_detector_interrupted_while_setting_its_threshold_keeps_its_old_fit(
    monkeypatch,
):
    X = _blobs()
    detector = FlowMatchingOutlierDetector(**TINY, random_state=0).fit(X)
    offset, field = detector.offset_, detector.vector_field_

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(FlowMatchingOutlierDetector, "sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        detector.fit(_blobs(seed=1))
    assert detector.offset_ == offset
    assert detector.vector_field_ is field
