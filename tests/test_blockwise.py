"""dask_score_samples: scoring dask arrays block by block."""

import numpy as np
import pytest
from _data import EXACT, SMALL, blobs
from numpy.testing import assert_allclose
from sklearn.exceptions import NotFittedError

from skflow import FlowMatchingDensity, dask_score_samples

da = pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def exact():
    """rk4 in float64: each row is integrated on its own."""
    X = blobs(150, 3)
    return X, FlowMatchingDensity(**EXACT, random_state=0).fit(X)


def test_dask_scores_equal_in_memory_scores(exact):
    X, est = exact
    # Rows in blocks of 7 and columns split too: they are joined first.
    blocks = da.from_array(X, chunks=(7, 2))
    lazy = dask_score_samples(est, blocks)
    assert lazy.shape == (len(X),) and lazy.dtype == np.float64
    assert_allclose(lazy.compute(), est.score_samples(X), rtol=1e-12)


def test_dask_scores_with_an_adaptive_solver_agree_to_its_tolerance():
    X = blobs(300)
    est = FlowMatchingDensity(**{**SMALL, "max_iter": 60}, random_state=0).fit(X)
    scores = dask_score_samples(est, da.from_array(X, chunks=50)).compute()
    # Steps are shared within a block, not across the whole array: the
    # engine's accuracy target is 1e-3 nats.
    assert_allclose(scores, est.score_samples(X), atol=1e-3, rtol=0)


def test_dask_scoring_checks_its_input(exact):
    X, est = exact
    with pytest.raises(ValueError, match="expecting 2-D data with 3 features"):
        dask_score_samples(est, da.from_array(X[:, :2]))
    with pytest.raises(NotFittedError):
        dask_score_samples(FlowMatchingDensity(), da.from_array(X))
