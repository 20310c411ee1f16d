import copy

import numpy as np
import pytest
import torch
from _data import SMALL, TINY, blobs

from skflow import FlowMatchingDensity
from skflow._likelihood_error import rows_to_measure
from skflow._ode import log_likelihood


def _tight_log_density(est, X):
    """An independent reference: float64, torchdiffeq's augmented solve."""
    field = copy.deepcopy(est.vector_field_).double()
    z = torch.as_tensor((X - est.mean_) / est.scale_)
    reference, _ = log_likelihood(
        field,
        z,
        est.path_.log_base_density,
        rtol=1e-10,
        atol=1e-10,
        method="augmented",
    )
    return reference.numpy() - np.log(est.scale_).sum()


@pytest.mark.parametrize("tolerance", [1e-3, 1e-5])
def test_stated_error_does_not_understate_an_independent_measurement(tolerance):
    # A loose solver makes errors large enough to measure. The attribute is
    # measured on the model's own samples (no rows are held out here); an
    # independent tight solve on 256 other samples must not find a mean
    # error more than twice the stated one (two means of 256 errors of the
    # same kind: their ratio stays well inside 2 unless the attribute is
    # wrong by construction).
    X = blobs(n=300)
    est = FlowMatchingDensity(
        **SMALL, rtol=tolerance, atol=tolerance, random_state=0
    ).fit(X)
    stated = est.likelihood_error_
    assert stated["n_rows"] == rows_to_measure(2) == 256
    rows = est.sample(256, random_state=1)
    error = np.abs(est.score_samples(rows) - _tight_log_density(est, rows))
    assert error.mean() <= 2 * stated["mean"]
    assert stated["max"] >= stated["mean"] > 0


def test_error_is_measured_on_held_out_rows_when_there_are_some():
    X = blobs(n=400, d=3)
    est = FlowMatchingDensity(**TINY, random_state=0).fit(X)
    # validation_fraction=0.1 holds out 40 rows, fewer than the 256 allowed.
    assert est.likelihood_error_["n_rows"] == 40
    assert 0 <= est.likelihood_error_["mean"] <= est.likelihood_error_["max"]


def test_fewer_rows_are_measured_in_higher_dimension():
    assert rows_to_measure(2) == 256
    assert rows_to_measure(15) == 128
    assert rows_to_measure(63) == 32
    assert rows_to_measure(1000) == 32
