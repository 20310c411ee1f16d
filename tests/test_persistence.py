"""skflow.save / skflow.load: faithful round trips, and no code run on load."""

import io
import json
import os
import pickle
import stat
import struct
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from _data import EXACT, TINY, blobs
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KernelDensity

import skflow
from skflow import (
    ConditionalFlowMatchingDensity,
    FlowMatchingDensity,
    FlowMatchingOutlierDetector,
)
from skflow._nets import FieldMixture, VectorField


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
    for name in (
        "mean_",
        "scale_",
        "sigma_",
        "n_iter_",
        "loss_curve_",
        "n_features_in_",
    ):
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


DATA = Path(__file__).parent / "data"


def _split(data: bytes) -> tuple[dict, bytes]:
    """A format-3 file's header and the bytes after it."""
    (length,) = struct.unpack("<Q", data[8:16])
    return json.loads(data[16 : 16 + length]), data[16 + length :]


def _join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return b"\x93SKFLOW\n" + struct.pack("<Q", len(text)) + text + body


def _rewrite_header(file, change):
    header, body = _split(file.read_bytes())
    change(header)
    file.write_bytes(_join(header, body))


@pytest.fixture
def saved(tmp_path):
    est = FlowMatchingDensity(**TINY, random_state=0).fit(blobs(n=100, d=3))
    file = tmp_path / "model.skflow"
    skflow.save(est, file)
    return est, file


def test_the_file_is_a_json_header_and_raw_little_endian_arrays(saved):
    est, file = saved
    data = file.read_bytes()
    assert data[:8] == b"\x93SKFLOW\n"
    header, body = _split(data)
    assert header["format_version"] == skflow.persistence.FORMAT_VERSION == 3
    entry = header["arrays"]["mean_"]
    start = entry["offset"]
    mean = np.frombuffer(body[start : start + 8 * 3], dtype="<f8")
    assert_array_equal(mean, est.mean_)
    assert len(body) == sum(
        np.dtype(a["dtype"]).itemsize * int(np.prod(a["shape"]))
        for a in header["arrays"].values()
    )


def test_an_incompatible_format_version_is_refused(saved):
    _, file = saved
    _rewrite_header(file, lambda h: h.update(format_version=99, skflow_version="9.0.0"))
    with pytest.raises(ValueError, match=r"written by skflow 9.0.0 in model format 99"):
        skflow.load(file)


@pytest.mark.parametrize("kind", ["density", "detector"])
def test_files_written_by_skflow_0_3_2_load_and_score_as_they_did(kind):
    # Written by tests/data/make_0_3_2_files.py with skflow 0.3.2 (format 2).
    # The same seed gives the same numbers for the same number of threads;
    # with another, float32 round-off moves dopri5's steps within its
    # tolerance (1e-6), far inside these bounds.
    expected = np.load(DATA / "expected-0.3.2.npz")
    loaded = skflow.load(DATA / f"{kind}-0.3.2.skflow")
    # 0.3.2 read the dequantization noise of column 2 (integers) from one
    # stream seeded by the model, row after row; skflow now draws it from
    # each row's values. Scoring 0.3.2's draws with the column taken as
    # continuous must give 0.3.2's scores: the model loaded is the same.
    X, mask = expected["X"], loaded.integer_columns_.copy()
    assert_array_equal(mask, [False, False, True])
    old_noise = np.random.default_rng(loaded._probe_seed).random(X.shape)
    loaded.integer_columns_ = np.zeros(3, bool)
    assert_allclose(
        loaded.score_samples(X + mask * old_noise),
        expected[f"{kind}_scores"],
        atol=1e-4,
    )
    loaded.integer_columns_ = mask
    if kind == "density":
        assert_allclose(
            loaded.sample(5, random_state=0), expected["density_samples"], atol=1e-4
        )
    else:
        assert loaded.offset_ == expected["detector_offset"]
    assert not hasattr(loaded, "solver_stats_")


def _legacy(tmp_path, change=None, kind="density"):
    """A format-2 file (a torch zip) from the 0.3.2 one, its header changed."""
    contents = torch.load(DATA / f"{kind}-0.3.2.skflow", weights_only=True)
    if change is not None:
        header = json.loads(contents["header"])
        change(header, contents["tensors"])
        contents["header"] = json.dumps(header)
    file = tmp_path / "legacy.skflow"
    torch.save(contents, file)
    return file


def test_a_format_1_file_without_fourier_features_still_loads(tmp_path):
    # skflow 0.1.0 wrote format 1: its fields had no Fourier features and
    # its headers no n_fourier_features.
    def as_format_1(header, tensors):
        header.update(format_version=1, skflow_version="0.1.0")
        del header["fitted"]["vector_field_"]["vector_field"]["n_fourier_features"]
        first = tensors["vector_field_.mlp.0.weight"]
        tensors["vector_field_.mlp.0.weight"] = torch.cat(
            [first[:, :3], first[:, -9:]], dim=1
        )  # x and the time features only
        tensors["vector_field_.fourier_features.projection"] = torch.zeros(3, 0)

    loaded = skflow.load(_legacy(tmp_path, as_format_1))
    assert loaded.vector_field_.fourier_features.n_outputs == 0
    assert np.all(np.isfinite(loaded.score_samples(blobs(n=5, d=3))))


def test_a_file_without_an_activation_loads_with_silu(tmp_path):
    # Files up to skflow 0.2.0 predate the choice of activation: all SiLU.
    file = _legacy(
        tmp_path,
        lambda h, t: h["fitted"]["vector_field_"]["vector_field"].pop("activation"),
    )
    assert skflow.load(file).vector_field_.activation == "silu"


def test_legacy_files_need_a_torch_without_unpickler_advisories(tmp_path, monkeypatch):
    file = _legacy(tmp_path)
    monkeypatch.setattr(torch, "__version__", "2.9.1")
    with pytest.raises(ValueError, match=r"torch 2\.9\.1 has known advisories"):
        skflow.load(file)


def test_a_compressed_legacy_record_is_refused_before_it_is_inflated(tmp_path):
    # A zip "bomb": 64 MiB of zeros deflate to a few KiB.
    file = tmp_path / "bomb.skflow"
    with zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * 2**26)
    assert file.stat().st_size < 2**20
    with pytest.raises(ValueError, match="is compressed, which skflow never writes"):
        skflow.load(file)


def _builds_nothing(monkeypatch):
    """Make building a network anywhere but on the meta device fail."""
    original = VectorField.__init__

    def meta_only(self, *args, **kwargs):
        assert torch.get_default_device().type == "meta", "a network was built"
        original(self, *args, **kwargs)

    monkeypatch.setattr(VectorField, "__init__", meta_only)


def _field_config(header):
    return header["fitted"]["vector_field_"]["vector_field"]


@pytest.mark.parametrize(
    "change, message",
    [
        # Claims that would allocate gigabytes are refused first.
        (
            lambda h: _field_config(h).update(hidden_layer_sizes=[16384, 16384]),
            "do not match its architecture",
        ),
        (
            lambda h: h["arrays"]["mean_"].update(shape=[10**7]),
            "truncated: array 'mean_' needs bytes past its end",
        ),
        (
            lambda h: _field_config(h).update(n_features=10**7),
            "implausible network architecture",
        ),
        (lambda h: h["arrays"]["mean_"].update(dtype="object"), "bad entry"),
    ],
    ids=["huge-layers", "huge-array", "huge-features", "dtype"],
)
def test_a_header_is_checked_before_anything_is_built(
    saved, monkeypatch, change, message
):
    _, file = saved
    _rewrite_header(file, change)
    _builds_nothing(monkeypatch)
    with pytest.raises(ValueError, match=message):
        skflow.load(file)


def _set_param(name, value):
    return lambda h: h["params"].update({name: {"value": value}})


def _set_array(saved_file, name, array):
    """Replace a fitted array's bytes (and entry) in a format-3 file."""
    header, body = _split(saved_file.read_bytes())
    arrays, offset, parts = {}, 0, []
    for key, entry in header["arrays"].items():
        start = entry["offset"]
        size = np.dtype(entry["dtype"]).itemsize * int(np.prod(entry["shape"]))
        data = body[start : start + size]
        if key == name:
            data = np.ascontiguousarray(array).tobytes()
            entry = {"dtype": array.dtype.name, "shape": list(array.shape)}
        arrays[key] = {**entry, "offset": offset}
        offset += len(data)
        parts.append(data)
    header["arrays"] = arrays
    saved_file.write_bytes(_join(header, b"".join(parts)))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h: h.update(format="something-else"), "not a skflow model file"),
        (lambda h: h.update(estimator="os.system"), "unknown estimator 'os.system'"),
        (lambda h: h.update(estimator=["a", "list"]), "unknown estimator"),
        (_set_param("sigma", -1.0), "damaged"),
        (_set_param("rtol", -1), "'rtol' parameter"),
        (_set_param("solver", "bogus"), "'solver' parameter"),
        (_set_param("inference_batch_size", -5), "'inference_batch_size' parameter"),
        (lambda h: h["params"].update(colour={"value": 1}), "damaged"),
        (lambda h: h["fitted"]["mean_"].update(ndarray="missing"), "damaged"),
        (lambda h: h["fitted"].update(mean_=5), "malformed entry"),
        (lambda h: h["fitted"].update(path_={"path": {"name": "x"}}), "damaged"),
        (lambda h: h["fitted"].update(n_features_in_={"value": 4}), "damaged"),
        (lambda h: h["fitted"].update(sigma_={"value": 0.5}), "sigma_ must be"),
        (lambda h: h["fitted"].pop("scale_"), "missing \\['scale_'\\]"),
        (lambda h: h["fitted"].update(spam_={"value": 1}), "unknown \\['spam_'\\]"),
    ],
    ids=[
        "format",
        "estimator",
        "estimator-list",
        "sigma",
        "rtol",
        "solver",
        "batch-size",
        "unknown-param",
        "tensor",
        "malformed-entry",
        "path",
        "n-features",
        "sigma_",
        "missing-attribute",
        "unknown-attribute",
    ],
)
def test_a_damaged_file_gets_one_clear_error_naming_it(saved, change, message):
    _, file = saved
    _rewrite_header(file, change)
    with pytest.raises(ValueError, match=message) as error:
        skflow.load(file)
    assert "model.skflow" in str(error.value) or "estimator" in str(error.value)


@pytest.mark.parametrize(
    "name, array, message",
    [
        ("scale_", -np.ones(3), "scale_ must be positive"),
        ("mean_", np.zeros(2), "mean_ must be 3 finite float64 values"),
        ("mean_", np.full(3, np.nan), "mean_ must be 3 finite float64 values"),
        ("integer_columns_", np.ones(3), "integer_columns_ must be 3 booleans"),
        # dequantize=False: no column can be discrete.
        ("integer_columns_", np.ones(3, bool), "dequantize=False"),
        (
            "vector_field_.mlp.0.weight",
            np.full((16, 3 + 128 + 9), np.nan, np.float32),
            "not all finite",
        ),
    ],
    ids=["scale", "mean-shape", "mean-nan", "columns-dtype", "columns-flipped", "nan"],
)
def test_tampered_fitted_arrays_are_refused(tmp_path, name, array, message):
    est = FlowMatchingDensity(**TINY, dequantize=False, random_state=0)
    file = tmp_path / "model.skflow"
    skflow.save(est.fit(blobs(n=100, d=3)), file)
    _set_array(file, name, array)
    with pytest.raises(ValueError, match=message):
        skflow.load(file)


def _zero_inflated_detector(tmp_path, **params):
    """A detector whose column 0 has an atom at 0, saved to a file."""
    X = blobs(n=100, d=3)
    X[::2, 0] = 0.0
    X[:, 2] = np.round(X[:, 2])
    detector = FlowMatchingOutlierDetector(
        **TINY, contamination=0.1, random_state=0, **params
    ).fit(X)
    file = tmp_path / "detector.skflow"
    skflow.save(detector, file)
    return detector, X, file


def test_a_detectors_atoms_round_trip(tmp_path):
    detector, X, file = _zero_inflated_detector(tmp_path)
    loaded = skflow.load(file)
    assert_array_equal(loaded.atoms_, [[0.0], [np.nan], [np.nan]])
    assert_array_equal(loaded.score_samples(X), detector.score_samples(X))


@pytest.mark.parametrize(
    "params, atoms, message",
    [
        ({}, np.full((3, 1), np.inf), "atoms_ must be 3 rows"),
        ({}, np.zeros((2, 1)), "atoms_ must be 3 rows"),
        ({}, np.array([[0.0], [np.nan], [1.0]]), "atoms of an integer column"),
        ({"dequantize": False}, np.array([[0.0], [np.nan], [np.nan]]), "dequantize"),
    ],
    ids=["inf", "shape", "integer-column", "no-dequantize"],
)
def test_tampered_atoms_are_refused(tmp_path, params, atoms, message):
    _, _, file = _zero_inflated_detector(tmp_path, **params)
    _set_array(file, "atoms_", atoms)
    with pytest.raises(ValueError, match=message):
        skflow.load(file)


def test_deep_truncated_and_junk_files_get_a_value_error(saved, tmp_path):
    _, file = saved
    data = file.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "header-cut": data[:20],
        "deep": b"\x93SKFLOW\n"
        + struct.pack("<Q", 200_000)
        + b"[" * 100_000
        + b"]" * 100_000,
        "junk": b"hello",
        "not-json": b"\x93SKFLOW\n" + struct.pack("<Q", 3) + b"{{{",
    }
    for name, content in cases.items():
        target = tmp_path / f"{name}.skflow"
        target.write_bytes(content)
        with pytest.raises(ValueError, match=f"{name}.skflow"):
            skflow.load(target)
    with pytest.raises(FileNotFoundError):
        skflow.load(tmp_path / "missing.skflow")


def test_a_named_pipe_is_refused_without_blocking(tmp_path):
    pipe = tmp_path / "model.fifo"
    os.mkfifo(pipe)
    with pytest.raises(ValueError, match="is not a regular file"):
        skflow.load(pipe)


def test_an_interrupted_save_leaves_the_previous_file_intact(saved, monkeypatch):
    est, file = saved
    before = file.read_bytes()

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        skflow.save(est, file)
    assert file.read_bytes() == before
    assert [path.name for path in file.parent.iterdir()] == ["model.skflow"]


def test_a_saved_file_gets_the_permissions_of_any_new_file(saved):
    _, file = saved
    plain = file.parent / "plain"
    with open(plain, "w"):
        pass
    assert stat.S_IMODE(file.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_a_model_saved_on_a_missing_gpu_loads_on_the_cpu(saved):
    est, file = saved
    _rewrite_header(file, lambda h: h["fitted"].update(device_={"device": "cuda:7"}))
    with pytest.warns(UserWarning, match="not available here; it is loaded on the CPU"):
        loaded = skflow.load(file)
    assert loaded.device_ == torch.device("cpu")
    X = blobs(n=100, d=3)
    assert_array_equal(loaded.score_samples(X), est.score_samples(X))


def _pairs(n_targets):
    """Conditions X (3 columns) and targets y that depend on them: 1-D for
    one target; for two, the second column is whole numbers."""
    X = blobs(n=100, d=3)
    noise = np.random.RandomState(1).normal(size=(100, 2))
    if n_targets == 1:
        return X, X[:, 0] + 0.1 * noise[:, 0]
    return X, np.column_stack([X[:, 0] - X[:, 1], np.round(3 * X[:, 2] + noise[:, 1])])


@pytest.mark.parametrize(
    "n_targets, params",
    [(1, TINY), (2, {**EXACT, "dequantize": True})],
    ids=["1-D-y", "2-D-y-float64-dequantized"],
)
def test_conditional_round_trip_gives_identical_scores_draws_and_means(
    tmp_path, n_targets, params
):
    X, y = _pairs(n_targets)
    est = ConditionalFlowMatchingDensity(**params, random_state=0).fit(X, y)
    file = tmp_path / "model.skflow"
    skflow.save(est, file)
    loaded = skflow.load(file)
    assert type(loaded) is ConditionalFlowMatchingDensity
    # On 100 pairs the model is a mixture of two refits.
    assert type(loaded.vector_field_) is FieldMixture
    assert loaded.get_params() == est.get_params()
    assert_array_equal(loaded.score_samples(X, y), est.score_samples(X, y))
    draws = loaded.sample(X[:4], n_samples=3, random_state=0)
    assert draws.shape == ((4, 3) if n_targets == 1 else (4, 3, 2))
    assert_array_equal(draws, est.sample(X[:4], n_samples=3, random_state=0))
    assert_array_equal(loaded.predict(X[:4]), est.predict(X[:4]))
    for name in ("y_mean_", "X_scale_", "integer_targets_", "n_targets_", "_y_ndim"):
        assert_array_equal(getattr(loaded, name), getattr(est, name))
    assert loaded.integer_targets_.any() == (n_targets == 2)


@pytest.fixture(scope="module")
def conditional():
    X, y = _pairs(1)
    return ConditionalFlowMatchingDensity(**TINY, random_state=0).fit(X, y)


@pytest.fixture
def saved_conditional(conditional, tmp_path):
    file = tmp_path / "model.skflow"
    skflow.save(conditional, file)
    return file


def _set_fitted(name, value):
    return lambda h: h["fitted"].update({name: {"value": value}})


def _members(header):
    """The entries of the fixture's field: a mixture of two (small data)."""
    return header["fitted"]["vector_field_"]["field_mixture"]


def _conditional_field(header):
    return _members(header)[0]["conditional_vector_field"]


def _as_unconditional_field(header):
    field = _members(header)[0]
    field["vector_field"] = field.pop("conditional_vector_field")


@pytest.mark.parametrize(
    "change, message",
    [
        (_set_fitted("n_targets_", 2), "y_mean_ must be 2 finite float64 values"),
        (_set_fitted("n_targets_", 0), "n_targets_ must be a positive int"),
        (_set_fitted("_y_ndim", 3), "_y_ndim must be 2, or 1 for a single target"),
        (_set_fitted("_y_ndim", 1.0), "_y_ndim must be"),
        (lambda h: h["fitted"].pop("_y_ndim"), "missing \\['_y_ndim'\\]"),
        (lambda h: h["fitted"].pop("X_mean_"), "missing \\['X_mean_'\\]"),
        (lambda h: h["fitted"].update(mean_={"value": 1}), "unknown \\['mean_'\\]"),
        (
            lambda h: _conditional_field(h).update(n_conditions=2),
            "do not match its architecture",
        ),
        (
            lambda h: _conditional_field(h).update(n_context=3),
            "implausible network architecture",
        ),
        (_as_unconditional_field, "implausible network architecture"),
        (lambda h: _members(h).pop(), "must list 2 to 16 networks"),
        (
            lambda h: _members(h).append({"field_mixture": _members(h)[:]}),
            "must list 2 to 16 networks",
        ),
        (
            lambda h: _members(h)[1]["conditional_vector_field"].update(
                activation="silu"
            ),
            "must share one architecture",
        ),
        (
            lambda h: h.update(estimator="FlowMatchingDensity"),
            "fitted attributes missing",
        ),
    ],
    ids=[
        "n-targets",
        "no-targets",
        "y-ndim",
        "y-ndim-float",
        "no-y-ndim",
        "no-X-mean",
        "density-attribute",
        "field-conditions",
        "field-extra-entry",
        "unconditional-tag",
        "one-member",
        "nested-mixture",
        "other-member-architecture",
        "other-estimator",
    ],
)
def test_a_tampered_conditional_header_is_refused_naming_the_file(
    saved_conditional, change, message
):
    _rewrite_header(saved_conditional, change)
    with pytest.raises(ValueError, match=message) as error:
        skflow.load(saved_conditional)
    assert "model.skflow" in str(error.value)


@pytest.mark.parametrize(
    "name, array, message",
    [
        ("X_scale_", np.ones(2), "X_scale_ must be 3 finite float64 values"),
        ("X_mean_", np.ones(3, np.float32), "X_mean_ must be 3 finite float64"),
        ("y_scale_", np.zeros(1), "y_scale_ must be positive"),
        ("y_mean_", np.full(1, np.inf), "y_mean_ must be 1 finite float64 values"),
        ("integer_targets_", np.ones(1), "integer_targets_ must be 1 booleans"),
        ("integer_targets_", np.ones(1, bool), "dequantize=False"),
    ],
    ids=["X-scale-shape", "X-mean-dtype", "y-scale", "y-mean-inf", "int-dtype", "int"],
)
def test_tampered_conditional_arrays_are_refused_naming_the_file(
    saved_conditional, name, array, message
):
    _set_array(saved_conditional, name, array)
    with pytest.raises(ValueError, match=message) as error:
        skflow.load(saved_conditional)
    assert "model.skflow" in str(error.value)


def test_a_conditional_field_is_checked_before_it_is_built(
    saved_conditional, monkeypatch
):
    _rewrite_header(
        saved_conditional, lambda h: _conditional_field(h).update(n_conditions=10**7)
    )
    _builds_nothing(monkeypatch)
    with pytest.raises(ValueError, match="implausible network architecture"):
        skflow.load(saved_conditional)


def test_a_conditional_field_in_a_density_file_is_refused(saved, conditional):
    # The density's header, with the conditional model's field and weights.
    _, file = saved
    buffer = io.BytesIO()
    skflow.save(conditional, buffer)
    header, arrays = skflow._file_format.parse(buffer.getvalue(), "x")
    density_header, density_arrays = skflow._file_format.parse(file.read_bytes(), "x")
    density_header["fitted"]["vector_field_"] = header["fitted"]["vector_field_"]
    density_arrays = {
        **{k: v for k, v in density_arrays.items() if not k.startswith("vector_")},
        **{k: v for k, v in arrays.items() if k.startswith("vector_field_.")},
    }
    del density_header["arrays"]
    skflow._file_format.write(density_header, density_arrays, file)
    with pytest.raises(ValueError, match="vector_field_ is not an unconditional field"):
        skflow.load(file)


def test_the_docstrings_name_the_conditional_estimator():
    for function in (skflow.save, skflow.load):
        assert "ConditionalFlowMatchingDensity" in function.__doc__
    assert "ConditionalFlowMatchingDensity" in skflow.persistence._ESTIMATORS
