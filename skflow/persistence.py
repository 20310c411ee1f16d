"""Safe persistence: save and load fitted estimators without pickle.

``pickle`` and ``joblib`` run whatever code a file names when it is loaded,
so a model file from an untrusted source is a program. :func:`save` writes
plain data only: a JSON header (format version, skflow version, class name,
parameters, fitted attributes) and the tensors of the fitted network and of
the standardization. :func:`load` reads them back with
``torch.load(weights_only=True)``, whose unpickler builds tensors, strings,
numbers, lists and dicts and refuses anything else, then rebuilds the
estimator from a fixed list of classes. No name in the file is ever
imported or called.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from typing import IO

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._nets import VectorField
from ._paths import PATHS, ProbabilityPath, make_path
from ._version import __version__
from .density import FlowMatchingDensity
from .outlier import FlowMatchingOutlierDetector

__all__ = ["save", "load", "FORMAT_VERSION"]

_FORMAT = "skflow-model"
# Bump when a file written by this version could not be read by the last.
# 2 (skflow 0.2.0): random Fourier features in the vector field, which a
# format-1 reader would build without and fail to load.
FORMAT_VERSION = 2
# Formats this version reads: format 1 files load as fields without
# Fourier features.
_READABLE_FORMATS = (1, 2)
_ESTIMATORS = {
    cls.__name__: cls for cls in (FlowMatchingDensity, FlowMatchingOutlierDetector)
}
# Fitted state that is private but needed to score as before.
_PRIVATE_FITTED = ("_probe_seed",)

PathLike = str | os.PathLike | IO[bytes]


def save(estimator: FlowMatchingDensity, file: PathLike) -> None:
    """Save a fitted skflow estimator to a file that loads without pickle.

    Parameters
    ----------
    estimator : FlowMatchingDensity or FlowMatchingOutlierDetector
        A fitted estimator.
    file : str, path-like or binary file object
        Where to write. The file holds a JSON header and tensors only.

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
    tensors: dict[str, torch.Tensor] = {}
    params = estimator.get_params(deep=False)
    if isinstance(params.get("random_state"), np.random.RandomState):
        warnings.warn(
            "random_state is a RandomState instance, which is saved as None.",
            UserWarning,
            stacklevel=2,
        )
        params["random_state"] = None
    header = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "skflow_version": __version__,
        "estimator": type(estimator).__name__,
        "params": {
            name: _encode(value, name, tensors) for name, value in params.items()
        },
        "fitted": {
            name: _encode(value, name, tensors)
            for name, value in vars(estimator).items()
            if (name.endswith("_") and not name.startswith("__"))
            or name in _PRIVATE_FITTED
        },
    }
    torch.save({"header": json.dumps(header), "tensors": tensors}, file)


def load(file: PathLike) -> FlowMatchingDensity:
    """Load an estimator written by :func:`save`, without unpickling code.

    Parameters
    ----------
    file : str, path-like or binary file object
        A file written by :func:`save`.

    Returns
    -------
    estimator : FlowMatchingDensity or FlowMatchingOutlierDetector
        The fitted estimator, on the device it was fitted on if this machine
        has it, on the CPU otherwise (with a warning).

    Raises
    ------
    ValueError
        If the file is not a skflow model, holds anything but plain data
        and tensors (it is refused before any of it runs), or was written
        in a format this version of skflow cannot read.
    """
    try:
        with warnings.catch_warnings():
            # Foreign pickles make torch warn about their protocol first.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            contents = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Also what a crafted file gets: its code is refused, never run.
        raise ValueError(
            f"Refused to load {_name(file)}: it is not a skflow model file. It "
            "holds more than tensors and plain data, or is not a pickle at "
            "all; a pickle or joblib file can run code when loaded, so load "
            "those with joblib only when you trust their source."
        ) from exc
    except OSError:
        raise  # missing file, permissions: the system's own message is clear
    except Exception as exc:  # torch's many ways of failing on other bytes
        raise ValueError(
            f"{_name(file)} is not a skflow model file "
            f"({exc.__class__.__name__}: {exc})."
        ) from exc
    header = _check_header(contents, file)
    tensors = contents["tensors"]
    estimator_class = _ESTIMATORS[header["estimator"]]
    try:
        params = {
            name: _decode(value, tensors) for name, value in header["params"].items()
        }
        fitted = {
            name: _decode(value, tensors) for name, value in header["fitted"].items()
        }
        estimator = estimator_class(**params)
        estimator._validate_params()
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise ValueError(
            f"{_name(file)} is a damaged skflow model file: {exc}"
        ) from exc
    # __setstate__ places the field on the saved device, or on the CPU with
    # a warning when this machine lacks it, as unpickling does.
    estimator.__setstate__({**vars(estimator), **fitted})
    return estimator


def _check_header(contents, file) -> dict:
    """The parsed header, after checking the file's kind and version."""
    if (
        not isinstance(contents, dict)
        or not isinstance(contents.get("header"), str)
        or not isinstance(contents.get("tensors"), dict)
    ):
        raise ValueError(f"{_name(file)} is not a skflow model file.")
    try:
        header = json.loads(contents["header"])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{_name(file)} has a damaged header: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise ValueError(f"{_name(file)} is not a skflow model file.")
    if header.get("format_version") not in _READABLE_FORMATS:
        readable = " and ".join(str(version) for version in _READABLE_FORMATS)
        raise ValueError(
            f"{_name(file)} was written by skflow "
            f"{header.get('skflow_version')} in model format "
            f"{header.get('format_version')}; this skflow ({__version__}) reads "
            f"formats {readable} only. Load it with the skflow that "
            "wrote it, or refit the model."
        )
    if header.get("estimator") not in _ESTIMATORS:
        raise ValueError(
            f"{_name(file)} holds an unknown estimator "
            f"{header.get('estimator')!r}; expected one of {sorted(_ESTIMATORS)}."
        )
    return header


def _encode(value, name: str, tensors: dict) -> dict:
    """A JSON-able tagged form of ``value``; arrays go to ``tensors``."""
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
        tensors[name] = torch.from_numpy(np.ascontiguousarray(value).copy())
        return {"ndarray": name}
    if isinstance(value, np.ndarray) and all(isinstance(v, str) for v in value.flat):
        return {"strings": value.tolist()}
    if isinstance(value, VectorField):
        for key, tensor in value.state_dict().items():
            tensors[f"{name}.{key}"] = tensor.detach().to("cpu")
        return {"vector_field": {"prefix": name, **value.config()}}
    if isinstance(value, ProbabilityPath):
        names = [key for key, cls in PATHS.items() if type(value) is cls]
        return {"path": {"name": names[0], "sigma": value.sigma}}
    raise TypeError(f"Cannot save attribute {name!r} of type {type(value).__name__}.")


def _decode(encoded: dict, tensors: dict):
    """Inverse of :func:`_encode`; builds only the types listed there."""
    ((tag, value),) = encoded.items()
    if tag == "value":
        return value
    if tag == "tuple":
        return tuple(value)
    if tag == "device":
        return torch.device(value)
    if tag == "ndarray":
        return tensors[value].numpy()
    if tag == "strings":
        return np.asarray(value, dtype=object)
    if tag == "vector_field":
        prefix = value["prefix"] + "."
        state = {
            key[len(prefix) :]: tensor
            for key, tensor in tensors.items()
            if key.startswith(prefix)
        }
        config = {
            # Files from skflow 0.1.0 predate the Fourier features, and files
            # up to 0.2.0 the choice of activation (they were all SiLU).
            "n_fourier_features": 0,
            "activation": "silu",
            **{key: entry for key, entry in value.items() if key != "prefix"},
        }
        field = VectorField.from_config(config)
        field = field.to(state["mlp.0.weight"].dtype)
        field.load_state_dict(state, strict=True)
        return field.requires_grad_(False).eval()
    if tag == "path":
        return make_path(value["name"], value["sigma"])
    raise ValueError(f"unknown entry {tag!r}")


def _is_json(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _name(file: PathLike) -> str:
    return repr(os.fspath(file)) if isinstance(file, str | os.PathLike) else "The file"
