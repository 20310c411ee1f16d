"""The bad-input matrix: every odd input to fit, score_samples, score and
sample either works correctly or raises a clear error, and the caller's
arrays are never modified.

"Works correctly" is checked against a reference: the same model fitted (or
scored) on the plain C-contiguous float64 copy of the input, which the
odd input must reproduce to round-off (fixed-step float64 solves, so each
row is integrated on its own; a Fortran-ordered array, as pandas hands out,
sums the column means in another order: measured 4e-16 relative).
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _data import EXACT, blobs
from numpy.testing import assert_allclose, assert_array_equal

from skflow import FlowMatchingDensity

# Fixed-step float64, one seed: the reference is reproduced to round-off.
MODEL = {**EXACT, "random_state": 0}
X2 = blobs(n=40)


def _snapshot(X):
    return X.copy(deep=True) if isinstance(X, pd.DataFrame) else np.array(X, copy=True)


def _assert_unchanged(X, snapshot):
    if isinstance(X, pd.DataFrame):
        pd.testing.assert_frame_equal(X, snapshot)
    elif sp.issparse(X):
        assert_array_equal(X.toarray(), snapshot.toarray())
    else:
        assert_array_equal(np.asarray(X), snapshot)


def _read_only(X):
    X = X.copy()
    X.setflags(write=False)
    return X


# Inputs that must fit, and the float64 array they must behave like.
FIT_WORKS = {
    "list-of-lists": (X2.tolist(), X2),
    "float32": (X2.astype(np.float32), X2.astype(np.float32).astype(np.float64)),
    "float16": (X2.astype(np.float16), X2.astype(np.float16).astype(np.float64)),
    "int": (np.round(10 * X2).astype(int), np.round(10 * X2)),
    "bool": (X2 > 0.3, (X2 > 0.3).astype(float)),
    "one-column": (X2[:, :1], X2[:, :1]),
    "two-rows": (X2[:2], X2[:2]),
    "read-only": (_read_only(X2), X2),
    "non-contiguous": (np.repeat(X2, 2, axis=1)[:, ::2], X2),
    "fortran-order": (np.asfortranarray(X2), X2),
    "duplicate-columns": (X2[:, [0, 0, 1]], X2[:, [0, 0, 1]]),
    "dataframe-with-names": (pd.DataFrame(X2, columns=["a", "b"]), X2),
    "dataframe-without-names": (pd.DataFrame(X2), X2),
}


@pytest.mark.parametrize("name", FIT_WORKS)
def test_odd_but_valid_input_fits_like_its_float64_copy(name):
    X, reference = FIT_WORKS[name]
    snapshot = _snapshot(X)
    with warnings.catch_warnings():
        # bool columns of a tiny sample may be constant: that warns.
        warnings.filterwarnings("ignore", message=".*are constant")
        est = FlowMatchingDensity(**MODEL).fit(X)
        expected = FlowMatchingDensity(**MODEL).fit(reference)
    scores = est.score_samples(X)
    assert scores.dtype == np.float64
    assert_allclose(scores, expected.score_samples(reference), rtol=1e-12)
    assert est.score(X) == pytest.approx(np.mean(scores), rel=1e-12)
    _assert_unchanged(X, snapshot)


FIT_ERRORS = {
    "nan": (np.where(X2 > 1, np.nan, X2), ValueError, "Input X contains NaN"),
    "+inf": (np.where(X2 > 1, np.inf, X2), ValueError, "Input X contains infinity"),
    "-inf": (np.where(X2 > 1, -np.inf, X2), ValueError, "Input X contains infinity"),
    "empty": (np.empty((0, 2)), ValueError, r"Found array with 0 sample\(s\)"),
    "no-columns": (np.empty((5, 0)), ValueError, r"0 feature\(s\)"),
    "one-row": (X2[:1], ValueError, r"Found array with 1 sample\(s\)"),
    "1-d": (X2[:, 0], ValueError, "Expected 2D array, got 1D array"),
    "3-d": (X2[:, :, None], ValueError, "Found array with dim 3"),
    "scalar": (3.0, ValueError, "Expected 2D array, got scalar array"),
    "csr": (sp.csr_matrix(X2), TypeError, "Sparse data was passed"),
    "coo": (sp.coo_matrix(X2), TypeError, "Sparse data was passed"),
    "strings": (np.array([["a", "b"], ["c", "d"]]), ValueError, "could not convert"),
    "object-none": (
        np.array([[1.0, None], [2.0, 3.0]], dtype=object),
        ValueError,
        "Input X contains NaN",
    ),
    "complex": (X2 + 1j, ValueError, "Complex data not supported"),
    "dataframe-string-column": (
        pd.DataFrame({"a": X2[:, 0], "b": ["x"] * len(X2)}),
        ValueError,
        "could not convert string to float",
    ),
    "dataframe-mixed-names": (
        pd.DataFrame(X2, columns=["a", 1]),
        TypeError,
        "Feature names are only supported if all input features have string names",
    ),
}


@pytest.mark.parametrize("name", FIT_ERRORS)
def test_bad_input_to_fit_raises_sklearns_error(name):
    X, error, message = FIT_ERRORS[name]
    snapshot = _snapshot(X) if not sp.issparse(X) else X.copy()
    with pytest.raises(error, match=message):
        FlowMatchingDensity(**MODEL).fit(X)
    if not np.isscalar(X):
        _assert_unchanged(X, snapshot)


@pytest.fixture(scope="module")
def fitted():
    return FlowMatchingDensity(**MODEL).fit(X2)


@pytest.fixture(scope="module")
def fitted_with_names():
    return FlowMatchingDensity(**MODEL).fit(pd.DataFrame(X2, columns=["a", "b"]))


SCORE_WORKS = {
    "one-row": X2[:1],
    "float32": X2.astype(np.float32),
    "float16": X2.astype(np.float16),
    "int": np.round(X2).astype(int),
    "bool": X2 > 0,
    "list-of-lists": X2.tolist(),
    "read-only": _read_only(X2),
    "non-contiguous": np.repeat(X2, 2, axis=1)[:, ::2],
    "fortran-order": np.asfortranarray(X2),
}


@pytest.mark.parametrize("name", SCORE_WORKS)
def test_odd_but_valid_input_scores_like_its_float64_copy(fitted, name):
    X = SCORE_WORKS[name]
    snapshot = _snapshot(X)
    reference = np.ascontiguousarray(np.asarray(X, dtype=np.float64))
    scores = fitted.score_samples(X)
    assert scores.dtype == np.float64 and scores.shape == (len(reference),)
    assert_allclose(scores, fitted.score_samples(reference), rtol=1e-12)
    assert fitted.score(X) == pytest.approx(np.mean(scores), rel=1e-12)
    _assert_unchanged(X, snapshot)


def test_huge_magnitudes_at_score_time_give_finite_very_negative_scores(fitted):
    X = np.vstack([X2[:3], [[1e30, -1e30]], [[-1e-30, 1e-30]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        scores = fitted.score_samples(X)
    assert np.all(np.isfinite(scores))
    assert scores[3] < -1e50  # about -|z|^2 / 2 with |z| ~ 1e30
    assert_allclose(scores[[0, 1, 2]], fitted.score_samples(X2[:3]), rtol=1e-12)


SCORE_ERRORS = {
    "nan": (np.array([[0.0, np.nan]]), ValueError, "Input X contains NaN"),
    "inf": (np.array([[np.inf, 0.0]]), ValueError, "Input X contains infinity"),
    "empty": (np.empty((0, 2)), ValueError, r"Found array with 0 sample\(s\)"),
    "wrong-columns": (
        np.zeros((4, 3)),
        ValueError,
        "X has 3 features, but FlowMatchingDensity is expecting 2 features",
    ),
    "1-d": (np.zeros(2), ValueError, "Expected 2D array, got 1D array"),
    "csr": (sp.csr_matrix(X2), TypeError, "Sparse data was passed"),
    "strings": (np.array([["a", "b"]]), ValueError, "could not convert"),
    "complex": (X2 + 1j, ValueError, "Complex data not supported"),
}


@pytest.mark.parametrize("method", ["score_samples", "score"])
@pytest.mark.parametrize("name", SCORE_ERRORS)
def test_bad_input_to_score_raises_sklearns_error(fitted, name, method):
    X, error, message = SCORE_ERRORS[name]
    with pytest.raises(error, match=message):
        getattr(fitted, method)(X)


def test_feature_names_are_checked_at_score_time(fitted, fitted_with_names):
    frame = pd.DataFrame(X2, columns=["a", "b"])
    expected = fitted_with_names.score_samples(frame)
    assert_allclose(fitted.score_samples(X2), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="The feature names should match"):
        fitted_with_names.score_samples(frame.rename(columns={"b": "c"}))
    with pytest.raises(ValueError, match="The feature names should match"):
        fitted_with_names.score_samples(frame[["b", "a"]])
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        assert_allclose(fitted_with_names.score_samples(X2), expected, rtol=1e-12)
    with pytest.warns(UserWarning, match="X has feature names, but"):
        assert_allclose(fitted.score_samples(frame), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "n_samples, error, message",
    [
        (0, ValueError, "n_samples == 0, must be >= 1"),
        (-3, ValueError, "n_samples == -3, must be >= 1"),
        (2.5, TypeError, "n_samples must be an instance of int"),
        ("3", TypeError, "n_samples must be an instance of int"),
        (None, TypeError, "n_samples must be an instance of int"),
    ],
)
def test_bad_n_samples_raise(fitted, n_samples, error, message):
    with pytest.raises(error, match=message):
        fitted.sample(n_samples)


def test_sample_accepts_numpy_ints_and_rejects_bad_seeds(fitted):
    assert_array_equal(
        fitted.sample(np.int64(4), random_state=np.int32(1)),
        fitted.sample(4, random_state=1),
    )
    with pytest.raises(ValueError, match="cannot be used to seed"):
        fitted.sample(4, random_state="seed")


@pytest.mark.parametrize(
    "weights, message",
    [
        (np.zeros(len(X2)), "Sample weights must contain at least one non-zero"),
        (np.ones(3), r"sample_weight.shape == \(3,\), expected \(40,\)"),
    ],
)
def test_bad_sample_weight_raises_and_is_left_unchanged(weights, message):
    # Every message of the validation is tested in test_preprocessing.py.
    snapshot = weights.copy()
    with pytest.raises(ValueError, match=message):
        FlowMatchingDensity(**MODEL).fit(X2, sample_weight=weights)
    assert_array_equal(weights, snapshot)


def test_fit_and_score_never_modify_inputs():
    X = X2.copy()
    weights = np.linspace(0.5, 2, len(X))
    snapshots = X.copy(), weights.copy()
    est = FlowMatchingDensity(**MODEL).fit(X, sample_weight=weights)
    est.score_samples(X)
    est.score(X)
    est.sample(5, random_state=0)
    assert_array_equal(X, snapshots[0])
    assert_array_equal(weights, snapshots[1])
