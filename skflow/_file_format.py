"""The bytes of a model file, and nothing else: layout, limits, reading.

Format 3 (skflow 0.4): 8 bytes of magic, ``b"\\x93SKFLOW\\n"``; the header's
length as an unsigned 64-bit little-endian integer; the header, UTF-8 JSON,
whose ``"arrays"`` entry gives each array's dtype, shape and offset; then the
arrays' bytes, little-endian and C-ordered, back to back. Every array is in
the file, so reading allocates no more than the file holds, and no
unpickler is involved.

Formats 1 and 2 (skflow 0.1 to 0.3) were torch zip files, read here only on
a torch without known advisories for its weights-only unpickler, and only
after their records are checked (stored, not compressed, and small).
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import stat
import struct
import warnings
import zipfile
from typing import IO

import numpy as np
import torch

from ._files import write_atomically

__all__ = ["MAGIC", "parse", "read_bytes", "write"]

MAGIC = b"\x93SKFLOW\n"
_DTYPES = {"float32", "float64", "int64", "bool"}
_MAX_HEADER_BYTES = 2**20
# Torch's weights-only unpickler had advisories before 2.10 (CVE-2025-32434,
# CVE-2026-24747): files of formats 1 and 2 are read only from there on.
_SAFE_UNPICKLER_TORCH = (2, 10)
_MAX_LEGACY_PICKLE_BYTES = 2**20

PathLike = str | os.PathLike | IO[bytes]


def parse(data: bytes, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and arrays of a model file of any readable format.

    Raises a ValueError naming the file (``name``) for anything else.
    """
    if data.startswith(MAGIC):
        return _parse(data, name)
    if data.startswith(b"PK\x03\x04"):
        return _parse_legacy(data, name)
    raise ValueError(
        f"Refused to load {_lower(name)}: it is not a skflow model file. A pickle "
        "or joblib file can run code when loaded, so load those with "
        "joblib only when you trust their source."
    )


def write(header: dict, arrays: dict[str, np.ndarray], file: PathLike) -> None:
    """Write ``header`` and ``arrays`` in format 3 (atomically to a path)."""
    offset, layout = 0, {}
    for key, array in arrays.items():
        if array.dtype.name not in _DTYPES:
            raise TypeError(f"Cannot save array {key!r} of dtype {array.dtype}.")
        layout[key] = {
            "dtype": array.dtype.name,
            "shape": list(array.shape),
            "offset": offset,
        }
        offset += array.nbytes
    text = json.dumps({**header, "arrays": layout}).encode("utf-8")
    parts = [MAGIC, struct.pack("<Q", len(text)), text]
    parts += [
        array.astype(array.dtype.newbyteorder("<")).tobytes()
        for array in arrays.values()
    ]
    if isinstance(file, str | os.PathLike):
        write_atomically(file, lambda out: out.writelines(parts))
    else:
        file.write(b"".join(parts))


def read_bytes(file: PathLike, name: str) -> bytes:
    """All of a file's bytes; a path must be a regular file (not a pipe)."""
    if not isinstance(file, str | os.PathLike):
        return file.read()
    mode = os.stat(file).st_mode  # FileNotFoundError, PermissionError as they are
    if not stat.S_ISREG(mode):
        raise ValueError(
            f"{name} is not a regular file (a pipe, a device or a folder)."
        )
    with open(file, "rb") as handle:
        return handle.read()


def _parse(data: bytes, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and arrays of a format-3 file, checked before any copy."""
    if len(data) < len(MAGIC) + 8:
        raise ValueError(f"{name} is truncated: it ends inside its header.")
    (length,) = struct.unpack("<Q", data[len(MAGIC) : len(MAGIC) + 8])
    start = len(MAGIC) + 8
    if length > _MAX_HEADER_BYTES or start + length > len(data):
        raise ValueError(
            f"{name} is damaged or truncated: its header claims {length} bytes."
        )
    header = _json(data[start : start + length], name)
    layout = header.get("arrays")
    if not isinstance(layout, dict):
        raise ValueError(f"{name} is not a skflow model file (no array table).")
    body = memoryview(data)[start + length :]
    arrays, expected_offset = {}, 0
    for key, entry in layout.items():
        dtype, shape = _check_array_entry(key, entry, expected_offset, name)
        size = math.prod(shape) * dtype.itemsize
        if expected_offset + size > len(body):
            raise ValueError(
                f"{name} is truncated: array {key!r} needs bytes past its end."
            )
        chunk = body[expected_offset : expected_offset + size]
        arrays[key] = (
            np.frombuffer(chunk, dtype=dtype)
            .reshape(shape)
            .astype(dtype.newbyteorder("="))
        )
        expected_offset += size
    if expected_offset != len(body):
        raise ValueError(f"{name} is damaged: it holds bytes no array claims.")
    return header, arrays


def _check_array_entry(key, entry, offset, name) -> tuple[np.dtype, list[int]]:
    if not (
        isinstance(entry, dict)
        and entry.get("dtype") in _DTYPES
        and isinstance(entry.get("shape"), list)
        and all(type(n) is int and n >= 0 for n in entry["shape"])
        and entry.get("offset") == offset
    ):
        raise ValueError(f"{name} is damaged: bad entry for array {key!r}.")
    return np.dtype(entry["dtype"]).newbyteorder("<"), entry["shape"]


def _json(text: bytes, name: str) -> dict:
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        kind = "too deeply nested" if isinstance(exc, RecursionError) else exc
        raise ValueError(f"{name} has a damaged header: {kind}.") from None
    if not isinstance(header, dict):
        raise ValueError(f"{name} is not a skflow model file.")
    return header


def _parse_legacy(data: bytes, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and arrays of a format-1 or -2 file (a torch zip file)."""
    torch_version = tuple(int(part) for part in torch.__version__.split(".")[:2])
    if torch_version < _SAFE_UNPICKLER_TORCH:
        raise ValueError(
            f"{name} is a model file of skflow 0.3 or earlier, which can only be "
            "read through torch's weights-only unpickler; torch "
            f"{torch.__version__} has known advisories there, so it is not "
            "read. Load it with torch >= 2.10, and skflow.save it again to "
            "get a file that needs no unpickler."
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"{name} is not a skflow model file ({exc}).") from None
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED or record.file_size > len(data):
            raise ValueError(
                f"Refused to load {_lower(name)}: record {record.filename!r} is "
                "compressed, which skflow never writes."
            )
        if (
            record.filename.endswith(".pkl")
            and record.file_size > _MAX_LEGACY_PICKLE_BYTES
        ):
            raise ValueError(
                f"Refused to load {_lower(name)}: its pickle record is too large."
            )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            contents = torch.load(
                io.BytesIO(data), map_location="cpu", weights_only=True
            )
    except pickle.UnpicklingError:
        raise ValueError(
            f"Refused to load {_lower(name)}: it is not a skflow model file. It holds "
            "more than tensors and plain data; a pickle or joblib file can run "
            "code when loaded, so load those with joblib only when you trust "
            "their source."
        ) from None
    except Exception as exc:  # torch's many ways of failing on other bytes
        raise ValueError(
            f"{name} is not a skflow model file ({exc.__class__.__name__}: {exc})."
        ) from None
    if not (
        isinstance(contents, dict)
        and isinstance(contents.get("header"), str)
        and isinstance(contents.get("tensors"), dict)
        and all(isinstance(t, torch.Tensor) for t in contents["tensors"].values())
    ):
        raise ValueError(f"{name} is not a skflow model file.")
    header = _json(contents["header"].encode("utf-8"), name)
    arrays = {key: tensor.numpy() for key, tensor in contents["tensors"].items()}
    return header, arrays


def _lower(name: str) -> str:
    """``name`` inside a sentence: "the file", or a quoted path as it is."""
    return name[:1].lower() + name[1:]
