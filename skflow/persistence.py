"""Safe persistence: save and load fitted estimators without pickle.

``pickle`` and ``joblib`` run whatever code a file names when it is loaded,
so a model file from an untrusted source is a program. :func:`save` writes
plain data only: a JSON header (format version, skflow version, class name,
parameters, fitted attributes) and raw arrays (``skflow._file_format`` holds
the layout). :func:`load` reads them without any unpickler and checks the
header before anything is built: the arrays against the file's size, the
network's architecture against its weights (on torch's ``meta`` device,
which allocates nothing), the parameters against the estimator's own
validation and every fitted attribute against what a fit makes. The
estimator is rebuilt from a fixed list of classes; no name in the file is
imported or called.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from typing import IO, NamedTuple

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._file_format import parse, read_bytes, write
from ._hollow import HollowVectorField
from ._nets import _ACTIVATIONS, ConditionalVectorField, FieldMixture, VectorField
from ._paths import PATHS, ProbabilityPath, make_path
from ._version import __version__
from .conditional import ConditionalFlowMatchingDensity
from .density import FlowMatchingDensity
from .outlier import FlowMatchingOutlierDetector

__all__ = ["FORMAT_VERSION", "load", "save"]

_FORMAT = "skflow-model"
# Bump when a file written by this version could not be read by the last.
# 2 (skflow 0.2.0): random Fourier features in the vector field.
# 3 (skflow 0.4.0): a JSON header and raw arrays instead of a torch zip file.
# A ConditionalFlowMatchingDensity file is format 3 too: the other classes'
# files are unchanged, and an older skflow refuses it as an unknown estimator.
FORMAT_VERSION = 3
_READABLE_FORMATS = (1, 2, 3)
_ESTIMATORS = {
    cls.__name__: cls
    for cls in (
        FlowMatchingDensity,
        FlowMatchingOutlierDetector,
        ConditionalFlowMatchingDensity,
    )
}
# Fitted state that is private but needed to score as before (_y_ndim: the
# shape of a conditional model's draws and predictions).
_PRIVATE_FITTED = ("_probe_seed", "_y_ndim")
# Limits on what a header may claim, far above any real model.
_MAX_WIDTH = 2**16
_MAX_LAYERS = 64
# A column's atoms each carry at least Recipe.atom_share of its weight.
_MAX_ATOMS = 1024
# Members of a FieldMixture; a real model has a few.
_MAX_MEMBERS = 16

PathLike = str | os.PathLike | IO[bytes]
Estimator = (
    FlowMatchingDensity | FlowMatchingOutlierDetector | ConditionalFlowMatchingDensity
)


def save(estimator: Estimator, file: PathLike) -> None:
    """Save a fitted skflow estimator to a file that loads without pickle.

    Parameters
    ----------
    estimator : FlowMatchingDensity, FlowMatchingOutlierDetector or \
            ConditionalFlowMatchingDensity
        A fitted estimator.
    file : str, path-like or binary file object
        Where to write. A path is written atomically: to a temporary file
        beside it, renamed over it once complete, so an interrupted save
        (a full disk) never leaves a truncated model behind.

    Notes
    -----
    A ``random_state`` given as a ``RandomState`` instance is saved as
    None (with a warning): it only matters for refitting, and an int seed
    should be used for reproducible fits anyway.

    Examples
    --------
    >>> import io, numpy as np, skflow
    >>> X = np.random.RandomState(0).normal(size=(100, 2))
    >>> est = skflow.FlowMatchingDensity(hidden_layer_sizes=(16,), max_iter=20,
    ...                                  random_state=0).fit(X)
    >>> buffer = io.BytesIO()
    >>> skflow.save(est, buffer)
    >>> loaded = skflow.load(io.BytesIO(buffer.getvalue()))
    >>> bool(np.all(loaded.score_samples(X) == est.score_samples(X)))
    True
    """
    if type(estimator) not in _ESTIMATORS.values():
        raise TypeError(
            f"skflow.save stores {sorted(_ESTIMATORS)} only, not "
            f"{type(estimator).__name__}; use joblib for other objects."
        )
    check_is_fitted(estimator)
    params = estimator.get_params(deep=False)
    if isinstance(params.get("random_state"), np.random.RandomState):
        warnings.warn(
            "random_state is a RandomState instance, which is saved as None.",
            UserWarning,
            stacklevel=2,
        )
        params["random_state"] = None
    arrays: dict[str, np.ndarray] = {}
    header = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "skflow_version": __version__,
        "estimator": type(estimator).__name__,
        "params": {
            name: _encode(value, name, arrays) for name, value in params.items()
        },
        "fitted": {
            name: _encode(value, name, arrays)
            for name, value in vars(estimator).items()
            if (name.endswith("_") and not name.startswith("__"))
            or name in _PRIVATE_FITTED
        },
    }
    write(header, arrays, file)


def load(file: PathLike) -> Estimator:
    """Load an estimator written by :func:`save`, without unpickling anything.

    Parameters
    ----------
    file : str, path-like or binary file object
        A file written by :func:`save`: a regular file, not a pipe or a
        device.

    Returns
    -------
    estimator : FlowMatchingDensity, FlowMatchingOutlierDetector or \
            ConditionalFlowMatchingDensity
        The fitted estimator, of the class that was saved, on the device it
        was fitted on if this machine has it, on the CPU otherwise (with a
        warning).

    Raises
    ------
    ValueError
        If the file is not a skflow model file, is damaged or truncated,
        claims more than it holds, holds values an estimator cannot have, or
        was written in a format this version of skflow cannot read. The
        message names the file and what is wrong; nothing in the file is
        built before its header has been checked.
    """
    name = _name(file)
    header, arrays = parse(read_bytes(file, name), name)
    return _rebuild(header, arrays, name)


def _rebuild(header: dict, arrays: dict[str, np.ndarray], name: str):
    _check_header(header, name)
    estimator_class = _ESTIMATORS[header["estimator"]]
    try:
        params = {
            key: _decode(value, arrays) for key, value in header["params"].items()
        }
        fitted = {
            key: _decode(value, arrays) for key, value in header["fitted"].items()
        }
        # Statistics of the last call that 0.3 stored; scoring keeps none now.
        fitted.pop("solver_stats_", None)
        estimator = estimator_class(**params)
        estimator._validate_params()
        _check_fitted(estimator, fitted)
        # __setstate__ places the field on the saved device, or on the CPU
        # with a warning when this machine lacks it, as unpickling does.
        estimator.__setstate__({**vars(estimator), **fitted})
    except (
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
        AttributeError,
        IndexError,
        OverflowError,
    ) as exc:
        raise ValueError(f"{name} is a damaged skflow model file: {exc}") from None
    return estimator


def _check_header(header: dict, name: str) -> None:
    """The file's kind, version and estimator class, before anything else."""
    if header.get("format") != _FORMAT:
        raise ValueError(f"{name} is not a skflow model file.")
    if header.get("format_version") not in _READABLE_FORMATS:
        readable = ", ".join(str(version) for version in _READABLE_FORMATS)
        raise ValueError(
            f"{name} was written by skflow {header.get('skflow_version')} in "
            f"model format {header.get('format_version')}; this skflow "
            f"({__version__}) reads formats {readable} only. Load it with the "
            "skflow that wrote it, or refit the model."
        )
    estimator = header.get("estimator")
    if not isinstance(estimator, str) or estimator not in _ESTIMATORS:
        raise ValueError(
            f"{name} holds an unknown estimator {estimator!r}; expected one of "
            f"{sorted(_ESTIMATORS)}."
        )
    if not (
        isinstance(header.get("params"), dict)
        and isinstance(header.get("fitted"), dict)
    ):
        raise ValueError(f"{name} is not a skflow model file (no parameters).")


class _Fitted(NamedTuple):
    """The fitted attributes of one estimator class beyond the shared ones:
    those a fit makes, those older files may lack, and their check."""

    required: frozenset[str]
    optional: frozenset[str]
    check: Callable[[Estimator, dict], None]


# What a fit of every estimator makes.
_FITTED = {"n_features_in_", "vector_field_", "path_", "device_", "_probe_seed"}
# Older files may lack some of these; a fit makes them all.
_OPTIONAL_FITTED = {
    "feature_names_in_",
    "n_iter_",
    "loss_curve_",
    "validation_scores_",
    "likelihood_error_",
}


def _check_fitted(estimator: Estimator, fitted: dict) -> None:
    """Every fitted attribute a fit makes, of the right type, shape and range."""
    kind = _FITTED_BY_CLASS[type(estimator)]
    expected = _FITTED | kind.required
    missing = expected - set(fitted)
    unknown = set(fitted) - expected - _OPTIONAL_FITTED - kind.optional
    if missing or unknown:
        raise ValueError(
            f"fitted attributes missing {sorted(missing)} or unknown {sorted(unknown)}"
        )
    _check_shared_fitted(fitted)
    kind.check(estimator, fitted)


def _check_shared_fitted(fitted: dict) -> None:
    """The attributes every estimator has, whatever it models."""
    d = fitted["n_features_in_"]
    _require(type(d) is int and d >= 1, "n_features_in_ must be a positive int")
    names = fitted.get("feature_names_in_")
    _require(
        names is None or (isinstance(names, np.ndarray) and names.shape == (d,)),
        f"feature_names_in_ must hold {d} names",
    )
    _require(isinstance(fitted["path_"], ProbabilityPath), "path_ is not a path")
    _require(isinstance(fitted["device_"], torch.device), "device_ is not a device")
    n_iter = fitted.get("n_iter_", 0)
    _require(type(n_iter) is int and n_iter >= 0, "n_iter_ must be an int >= 0")
    for key in ("loss_curve_", "validation_scores_"):
        _require(
            isinstance(fitted.get(key, []), list)
            and all(isinstance(x, int | float) for x in fitted.get(key, [])),
            f"{key} must be a list of numbers",
        )
    error = fitted.get("likelihood_error_", {"mean": 0.0, "max": 0.0, "n_rows": 0})
    _require(
        isinstance(error, dict)
        and set(error) == {"mean", "max", "n_rows"}
        and all(isinstance(error[key], int | float) for key in error),
        "likelihood_error_ must map mean, max and n_rows to numbers",
    )
    seed = fitted["_probe_seed"]
    _require(type(seed) is int and 0 <= seed < 2**32, "bad _probe_seed")


def _check_density(estimator: FlowMatchingDensity, fitted: dict) -> None:
    """p(x): the per-feature arrays and the network agree with n_features_in_."""
    d = fitted["n_features_in_"]
    _check_scaling(fitted, "mean_", "scale_", d)
    _check_discrete(estimator, fitted, "integer_columns_", d)
    field = fitted["vector_field_"]
    _require(
        type(field) in (VectorField, HollowVectorField),
        "vector_field_ is not an unconditional field",
    )
    _require(field.n_features == d, "the network has the wrong width")
    sigma = fitted.get("sigma_", fitted["path_"].sigma)
    _require(
        isinstance(sigma, int | float) and sigma == fitted["path_"].sigma,
        "sigma_ must be the path's sigma",
    )


def _check_detector(estimator: FlowMatchingOutlierDetector, fitted: dict) -> None:
    _check_density(estimator, fitted)
    offset = fitted["offset_"]
    _require(isinstance(offset, int | float) and math.isfinite(offset), "bad offset_")
    d = fitted["n_features_in_"]
    atoms = fitted.get("atoms_", np.empty((d, 0)))
    _require(
        isinstance(atoms, np.ndarray)
        and atoms.dtype == np.float64
        and atoms.ndim == 2
        and atoms.shape[0] == d
        and atoms.shape[1] <= _MAX_ATOMS
        and not np.isinf(atoms).any(),
        f"atoms_ must be {d} rows of at most {_MAX_ATOMS} finite float64 values or NaN",
    )
    has_atoms = ~np.isnan(atoms).all(axis=1)
    _require(
        estimator.dequantize or not has_atoms.any(),
        "atoms_ holds atoms, but dequantize=False",
    )
    integer_columns = fitted.get("integer_columns_", np.zeros(d, bool))
    _require(
        not (has_atoms & integer_columns).any(),
        "atoms_ holds atoms of an integer column",
    )


def _check_conditional(estimator: ConditionalFlowMatchingDensity, fitted: dict) -> None:
    """p(y | x): y's arrays agree with n_targets_, X's with n_features_in_,
    and the network with both."""
    k, d = fitted["n_targets_"], fitted["n_features_in_"]
    _require(type(k) is int and k >= 1, "n_targets_ must be a positive int")
    _check_scaling(fitted, "y_mean_", "y_scale_", k)
    _check_scaling(fitted, "X_mean_", "X_scale_", d)
    _check_discrete(estimator, fitted, "integer_targets_", k)
    y_ndim = fitted["_y_ndim"]
    _require(
        type(y_ndim) is int and (y_ndim == 2 or (y_ndim == 1 and k == 1)),
        "_y_ndim must be 2, or 1 for a single target",
    )
    field = fitted["vector_field_"]
    if type(field) is FieldMixture:
        field = field.members[0]  # _decode_mixture: they share one architecture
    _require(
        type(field) is ConditionalVectorField,
        "vector_field_ is not a conditional field",
    )
    _require(
        field.n_targets == k and field.n_conditions == d,
        "the network's numbers of targets and conditions do not match the model's",
    )


_FITTED_BY_CLASS: dict[type, _Fitted] = {
    FlowMatchingDensity: _Fitted(
        frozenset({"mean_", "scale_"}),
        frozenset({"integer_columns_", "sigma_"}),
        _check_density,
    ),
    FlowMatchingOutlierDetector: _Fitted(
        frozenset({"mean_", "scale_", "offset_"}),
        frozenset({"integer_columns_", "sigma_", "atoms_"}),
        _check_detector,
    ),
    ConditionalFlowMatchingDensity: _Fitted(
        frozenset(
            {
                "n_targets_",
                "y_mean_",
                "y_scale_",
                "X_mean_",
                "X_scale_",
                "integer_targets_",
                "n_iter_",
                "loss_curve_",
                "validation_scores_",
                "likelihood_error_",
                "_y_ndim",
            }
        ),
        frozenset(),
        _check_conditional,
    ),
}


def _check_scaling(fitted: dict, mean: str, scale: str, n: int) -> None:
    """A standardization: ``n`` finite float64 means and positive scales."""
    for key in (mean, scale):
        array = fitted[key]
        _require(
            isinstance(array, np.ndarray)
            and array.dtype == np.float64
            and array.shape == (n,)
            and np.all(np.isfinite(array)),
            f"{key} must be {n} finite float64 values",
        )
    _require(np.all(fitted[scale] > 0), f"{scale} must be positive")


def _check_discrete(estimator: Estimator, fitted: dict, key: str, n: int) -> None:
    """``n`` booleans (all False where absent), none set without dequantize."""
    columns = fitted.get(key, np.zeros(n, bool))
    _require(
        isinstance(columns, np.ndarray)
        and columns.dtype == bool
        and columns.shape == (n,),
        f"{key} must be {n} booleans",
    )
    _require(
        estimator.dequantize or not columns.any(),
        f"{key} marks columns as discrete, but dequantize=False",
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _encode(value, name: str, arrays: dict) -> dict:
    """A JSON-able tagged form of ``value``; arrays go to ``arrays``."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return {"value": value}
    if isinstance(value, list | dict) and _is_json(value):
        return {"value": value}
    if isinstance(value, tuple) and _is_json(list(value)):
        return {"tuple": list(value)}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        arrays[name] = np.ascontiguousarray(value)
        return {"ndarray": name}
    if isinstance(value, np.ndarray) and all(isinstance(v, str) for v in value.flat):
        return {"strings": value.tolist()}
    if type(value) is FieldMixture:
        return {
            "field_mixture": [
                _encode(member, f"{name}.{k}", arrays)
                for k, member in enumerate(value.members)
            ]
        }
    for tag, network in _NETWORKS.items():
        if type(value) is network.cls:
            for key, tensor in value.state_dict().items():
                arrays[f"{name}.{key}"] = tensor.detach().to("cpu").numpy()
            return {tag: {"prefix": name, **value.config()}}
    if isinstance(value, ProbabilityPath):
        names = [key for key, cls in PATHS.items() if type(value) is cls]
        return {"path": {"name": names[0], "sigma": value.sigma}}
    raise TypeError(f"Cannot save attribute {name!r} of type {type(value).__name__}.")


def _decode(encoded: dict, arrays: dict):
    """Inverse of :func:`_encode`; builds only the types listed there."""
    if not isinstance(encoded, dict) or len(encoded) != 1:
        raise ValueError(f"malformed entry {str(encoded)[:80]!r}")
    ((tag, value),) = encoded.items()
    if tag == "value":
        return value
    if tag == "tuple":
        return tuple(value)
    if tag == "device":
        return torch.device(value)
    if tag == "ndarray":
        return arrays[value]
    if tag == "strings":
        if not all(isinstance(v, str) for v in value):
            raise ValueError("feature names must be strings")
        return np.asarray(value, dtype=object)
    if tag in _NETWORKS:
        return _decode_field(_NETWORKS[tag], value, arrays)
    if tag == "field_mixture":
        return _decode_mixture(value, arrays)
    if tag == "path":
        if not (isinstance(value.get("sigma"), int | float) and value["sigma"] >= 0):
            raise ValueError(f"bad path sigma {value.get('sigma')!r}")
        return make_path(value["name"], value["sigma"])
    raise ValueError(f"unknown entry {tag!r}")


class _Network(NamedTuple):
    """A network class and the entries of its ``config()``: counts of at
    least 1, counts of at least 0, lists of layer widths (the first one
    holds 1 or more), and defaults for entries older files lack."""

    cls: type[VectorField] | type[HollowVectorField] | type[ConditionalVectorField]
    positive: tuple[str, ...]
    non_negative: tuple[str, ...]
    layers: tuple[str, ...]
    defaults: dict


# The networks a file may hold, by their tag in the header.
_NETWORKS = {
    "vector_field": _Network(
        VectorField,
        positive=("n_features",),
        non_negative=("n_frequencies", "n_fourier_features"),
        layers=("hidden_layer_sizes",),
        # Files from skflow 0.1.0 predate the Fourier features, and files
        # up to 0.2.0 the choice of activation (they were all SiLU).
        defaults={"n_fourier_features": 0, "activation": "silu"},
    ),
    "hollow_vector_field": _Network(
        HollowVectorField,
        positive=("n_features",),
        non_negative=("n_frequencies",),
        layers=("hidden_layer_sizes",),
        defaults={},
    ),
    "conditional_vector_field": _Network(
        ConditionalVectorField,
        positive=("n_targets", "n_conditions"),
        non_negative=("n_frequencies", "n_fourier_features"),
        layers=("hidden_layer_sizes", "embedding_layer_sizes"),
        defaults={},
    ),
}


def _decode_field(network: _Network, value: dict, arrays: dict):
    """The network, after its architecture was checked against its weights."""
    config = {
        **network.defaults,
        **{key: entry for key, entry in value.items() if key != "prefix"},
    }
    _check_architecture(network, config)
    prefix = value["prefix"] + "."
    state = {
        key[len(prefix) :]: array
        for key, array in arrays.items()
        if key.startswith(prefix)
    }
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = network.cls.from_config(config).state_dict()
    shapes = {key: tuple(array.shape) for key, array in state.items()}
    if shapes != {key: tuple(tensor.shape) for key, tensor in expected.items()}:
        raise ValueError("the network's weights do not match its architecture")
    if not all(np.all(np.isfinite(array)) for array in state.values()):
        raise ValueError("the network's weights are not all finite")
    dtypes = {array.dtype for array in state.values()}
    if len(dtypes) != 1 or dtypes.pop() not in (np.float32, np.float64):
        raise ValueError("the network's weights must all be float32 or all float64")
    tensors = {key: torch.from_numpy(np.array(array)) for key, array in state.items()}
    field = network.cls.from_config(config)
    field = field.to(next(iter(tensors.values())).dtype)
    field.load_state_dict(tensors, strict=True)
    return field.requires_grad_(False).eval()


def _decode_mixture(value, arrays: dict) -> FieldMixture:
    """A mixture of 2 or more networks of one architecture and dtype (no
    mixture of mixtures)."""
    if not (
        isinstance(value, list)
        and 2 <= len(value) <= _MAX_MEMBERS
        and all(
            isinstance(entry, dict) and len(entry) == 1 and set(entry) <= set(_NETWORKS)
            for entry in value
        )
    ):
        raise ValueError(f"a field mixture must list 2 to {_MAX_MEMBERS} networks")
    members = [_decode(entry, arrays) for entry in value]
    first = members[0]
    if not all(
        type(member) is type(first)
        and member.config() == first.config()
        and next(member.parameters()).dtype == next(first.parameters()).dtype
        for member in members
    ):
        raise ValueError("a field mixture's networks must share one architecture")
    return FieldMixture(members)


def _check_architecture(network: _Network, config: dict) -> None:
    """Refuse a config with other entries than ``network``'s, or sizes far
    beyond any real model, before anything is built from it."""
    layers = [config.get(key) for key in network.layers]
    if not (
        set(config)
        == {*network.positive, *network.non_negative, *network.layers, "activation"}
        and isinstance(config["activation"], str)
        and config["activation"] in _ACTIVATIONS
        and all(_is_size(config[key], 1) for key in network.positive)
        and all(_is_size(config[key], 0) for key in network.non_negative)
        and all(isinstance(sizes, list) for sizes in layers)
        and 1 <= len(layers[0]) <= _MAX_LAYERS
        and all(len(sizes) <= _MAX_LAYERS for sizes in layers)
        and all(_is_size(n, 1) for sizes in layers for n in sizes)
    ):
        raise ValueError(f"implausible network architecture {config!r}")


def _is_size(n, low: int) -> bool:
    return type(n) is int and low <= n <= _MAX_WIDTH


def _is_json(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _name(file: PathLike) -> str:
    return repr(os.fspath(file)) if isinstance(file, str | os.PathLike) else "The file"
