"""skflow.save / skflow.load: faithful round trips, and no code run on load."""

import io
import json
import os
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from _data import TINY, blobs
from numpy.testing import assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KernelDensity

import skflow
from skflow import FlowMatchingDensity, FlowMatchingOutlierDetector
from skflow._nets import VectorField


@pytest.mark.parametrize(
    "estimator",
    [
        FlowMatchingDensity(**TINY, random_state=0),
        FlowMatchingDensity(
            **TINY, dtype="float64", divergence="hutchinson", n_probes=2, random_state=1
        ),
        FlowMatchingDensity(
            **TINY, path="ot-cfm", sigma=0.1, solver="rk4", n_steps=6, random_state=2
        ),
        FlowMatchingOutlierDetector(**TINY, contamination=0.1, random_state=0),
    ],
    ids=["default", "float64-hutchinson", "rk4-ot-cfm", "detector"],
)
def test_round_trip_gives_identical_scores_and_samples(estimator, tmp_path):
    X = blobs(100, 3)
    estimator.fit(X)
    file = tmp_path / "model.skflow"
    skflow.save(estimator, file)
    loaded = skflow.load(file)
    assert type(loaded) is type(estimator)
    assert loaded.get_params() == estimator.get_params()
    assert_array_equal(loaded.score_samples(X), estimator.score_samples(X))
    assert_array_equal(
        loaded.sample(7, random_state=0), estimator.sample(7, random_state=0)
    )
    for name in ("mean_", "scale_", "n_iter_", "loss_curve_", "n_features_in_"):
        assert_array_equal(getattr(loaded, name), getattr(estimator, name))
    assert loaded.device_ == estimator.device_
    assert repr(loaded.path_) == repr(estimator.path_)
    if isinstance(estimator, FlowMatchingOutlierDetector):
        assert loaded.offset_ == estimator.offset_
        assert_array_equal(loaded.predict(X), estimator.predict(X))


def test_feature_names_and_file_objects_round_trip():
    X = pd.DataFrame(blobs(100, 3), columns=["a", "b", "c"])
    est = FlowMatchingDensity(**TINY, random_state=0).fit(X)
    buffer = io.BytesIO()
    skflow.save(est, buffer)
    loaded = skflow.load(io.BytesIO(buffer.getvalue()))
    assert_array_equal(loaded.feature_names_in_, ["a", "b", "c"])
    assert loaded.feature_names_in_.dtype == object
    with pytest.raises(ValueError, match="The feature names should match"):
        loaded.score_samples(X.rename(columns={"a": "z"}))


def test_saving_needs_a_fitted_skflow_estimator(tmp_path):
    with pytest.raises(NotFittedError):
        skflow.save(FlowMatchingDensity(), tmp_path / "model.skflow")
    with pytest.raises(TypeError, match="use joblib for other objects"):
        skflow.save(KernelDensity().fit(blobs(100, 3)), tmp_path / "model.skflow")


def test_a_random_state_instance_is_saved_as_none(tmp_path):
    est = FlowMatchingDensity(**TINY, random_state=np.random.RandomState(0))
    est.fit(blobs(100, 3))
    with pytest.warns(UserWarning, match="saved as None"):
        skflow.save(est, tmp_path / "model.skflow")
    assert skflow.load(tmp_path / "model.skflow").random_state is None


class _Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle", "joblib"])
def test_a_malicious_file_is_refused_without_running_its_payload(tmp_path, writer):
    marker = tmp_path / "payload-ran"
    file = tmp_path / "model.skflow"
    payload = {"header": _Payload(marker), "tensors": {}}
    if writer == "torch.save":
        torch.save(payload, file)
    elif writer == "pickle":
        file.write_bytes(pickle.dumps(payload))
    else:
        joblib.dump(payload, file)
    with pytest.raises(
        ValueError, match=r"Refused to load .*: it is not a skflow model file"
    ):
        skflow.load(file)
    assert not marker.exists()


def test_the_payload_really_runs_under_plain_pickle(tmp_path):
    # The control for the test above: the same bytes are dangerous.
    marker = tmp_path / "payload-ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


def _rewrite_header(file, change):
    contents = torch.load(file, weights_only=True)
    header = json.loads(contents["header"])
    change(header)
    contents["header"] = json.dumps(header)
    torch.save(contents, file)


@pytest.fixture
def saved(tmp_path):
    est = FlowMatchingDensity(**TINY, random_state=0).fit(blobs(100, 3))
    file = tmp_path / "model.skflow"
    skflow.save(est, file)
    return est, file


def test_an_incompatible_format_version_is_refused(saved):
    _, file = saved
    _rewrite_header(file, lambda h: h.update(format_version=99, skflow_version="9.0.0"))
    with pytest.raises(ValueError, match=r"written by skflow 9.0.0 in model format 99"):
        skflow.load(file)


def test_a_format_1_file_without_fourier_features_still_loads(tmp_path):
    # skflow 0.1.0 wrote format 1: its fields had no Fourier features and
    # its headers no n_fourier_features.
    est = FlowMatchingDensity(**TINY, random_state=0).fit(blobs(100, 3))
    field = VectorField(3, TINY["hidden_layer_sizes"], n_fourier_features=0)
    est.vector_field_ = field.requires_grad_(False).eval()
    file = tmp_path / "old.skflow"
    skflow.save(est, file)

    def as_format_1(header):
        header.update(format_version=1, skflow_version="0.1.0")
        del header["fitted"]["vector_field_"]["vector_field"]["n_fourier_features"]

    _rewrite_header(file, as_format_1)
    loaded = skflow.load(file)
    assert loaded.vector_field_.fourier_features.n_outputs == 0
    X = blobs(100, 3)[:20]
    assert_array_equal(loaded.score_samples(X), est.score_samples(X))


def test_a_file_without_an_activation_loads_with_silu(saved):
    # Files up to skflow 0.2.0 predate the choice of activation: all SiLU.
    est, file = saved
    est.vector_field_ = VectorField(
        3, TINY["hidden_layer_sizes"], activation="silu"
    ).requires_grad_(False)
    skflow.save(est, file)
    _rewrite_header(
        file,
        lambda h: h["fitted"]["vector_field_"]["vector_field"].pop("activation"),
    )
    loaded = skflow.load(file)
    assert loaded.vector_field_.activation == "silu"
    X = blobs(100, 3)[:20]
    assert_array_equal(loaded.score_samples(X), est.score_samples(X))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h: h.update(format="something-else"), "not a skflow model file"),
        (lambda h: h.update(estimator="os.system"), "unknown estimator 'os.system'"),
        (lambda h: h["params"].update(sigma={"value": -1.0}), "damaged"),
        (lambda h: h["params"].update(colour={"value": 1}), "damaged"),
        (lambda h: h["fitted"]["mean_"].update(ndarray="missing"), "damaged"),
        (lambda h: h["fitted"].update(path_={"path": {"name": "x"}}), "damaged"),
    ],
    ids=["format", "estimator", "bad-param", "unknown-param", "tensor", "path"],
)
def test_a_damaged_file_gets_a_clear_error(saved, change, message):
    _, file = saved
    _rewrite_header(file, change)
    with pytest.raises(ValueError, match=message):
        skflow.load(file)


def test_junk_and_missing_files(tmp_path):
    junk = tmp_path / "junk.skflow"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="not a skflow model file"):
        skflow.load(junk)
    with pytest.raises(FileNotFoundError):
        skflow.load(tmp_path / "missing.skflow")


def test_a_model_saved_on_a_missing_gpu_loads_on_the_cpu(saved):
    est, file = saved
    _rewrite_header(file, lambda h: h["fitted"].update(device_={"device": "cuda:7"}))
    with pytest.warns(UserWarning, match="not available here; it is loaded on the CPU"):
        loaded = skflow.load(file)
    assert loaded.device_ == torch.device("cpu")
    assert_array_equal(
        loaded.score_samples(blobs(100, 3)), est.score_samples(blobs(100, 3))
    )
