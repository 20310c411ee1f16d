"""Property-based tests (hypothesis): input validation and scoring invariants."""

import functools
import warnings

import numpy as np
import pytest
from _data import EXACT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose

from skflow import FlowMatchingDensity

# Fixed-step float64 solves integrate each row on its own, so row order and
# chunking may change nothing but the round-off of the matrix products. Five
# steps: what is tested is validation and bookkeeping, not the fit.
MODEL = {**EXACT, "max_iter": 5, "random_state": 0}
SETTINGS = settings(
    max_examples=40,
    deadline=None,  # shared CI machines: no timing in tests
    suppress_health_check=[HealthCheck.too_slow],
)

DTYPES = st.sampled_from(
    [
        np.float16,
        np.float32,
        np.float64,
        np.int8,
        np.int64,
        np.uint8,
        np.bool_,
        np.complex128,
    ]
)


@st.composite
def arrays(draw, max_rows=6, max_columns=3):
    dtype = draw(DTYPES)
    shape = draw(
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=max_rows)
    )
    shape = shape[:1] + tuple(min(side, max_columns) for side in shape[1:])
    return draw(hnp.arrays(dtype, shape))


@SETTINGS
@given(X=arrays())
def test_fit_either_works_or_raises_a_clear_error(X):
    before = X.copy()
    with np.errstate(all="ignore"):
        finite = np.all(np.isfinite(X.astype(np.complex128)))
    clearly_invalid = (
        X.ndim != 2
        or X.shape[0] < 2
        or X.shape[1] < 1
        or np.issubdtype(X.dtype, np.complexfloating)
        or not finite
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant columns are common here
        if clearly_invalid:
            with pytest.raises(ValueError):
                FlowMatchingDensity(**MODEL).fit(X)
        else:
            try:
                est = FlowMatchingDensity(**MODEL).fit(X)
            except ValueError as error:
                # Only a variance beyond float64 may stop a valid fit.
                assert "too large to standardize" in str(error)
                assert np.max(np.abs(X.astype(np.float64))) > 1e150
            else:
                scores = est.score_samples(X)
                assert scores.dtype == np.float64 and scores.shape == (len(X),)
                assert not np.any(np.isnan(scores))
    np.testing.assert_array_equal(X, before)


@functools.cache
def _fitted(n_features):
    X = np.random.RandomState(n_features).normal(size=(64, n_features))
    return FlowMatchingDensity(**MODEL).fit(X)


finite_rows = st.integers(1, 4).flatmap(
    lambda d: hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 30), st.just(d)),
        elements=st.floats(-1e3, 1e3, allow_nan=False),
    )
)


@SETTINGS
@given(X=finite_rows, data=st.data())
def test_scores_follow_their_rows_when_reordered(X, data):
    est = _fitted(X.shape[1])
    order = data.draw(st.permutations(range(len(X))))
    assert_allclose(
        est.score_samples(X[order]), est.score_samples(X)[order], rtol=1e-12
    )


@SETTINGS
@given(X=finite_rows, batch_size=st.integers(1, 40))
def test_scores_do_not_depend_on_chunking(X, batch_size):
    est = _fitted(X.shape[1])
    whole = est.score_samples(X)
    chunked = est.set_params(inference_batch_size=batch_size).score_samples(X)
    est.set_params(inference_batch_size="auto")
    assert_allclose(chunked, whole, rtol=1e-12)


@SETTINGS
@given(X=finite_rows, dtype=st.sampled_from([np.float32, np.float64, np.int32]))
def test_outputs_are_float64_whatever_the_input_dtype(X, dtype):
    est = _fitted(X.shape[1])
    scores = est.score_samples(X.astype(dtype))
    samples = est.sample(3, random_state=0)
    assert scores.dtype == np.float64 and samples.dtype == np.float64
    assert np.all(np.isfinite(scores))
