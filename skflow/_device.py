"""Device and dtype resolution, numpy <-> torch, and seeding.

The estimator never keeps torch objects in its parameters: ``device`` and
``dtype`` are strings (or a ``torch.device``) resolved here at fit time.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.utils import check_random_state

__all__ = [
    "DTYPES",
    "resolve_device",
    "check_dtype_on_device",
    "device_available",
    "on_available_device",
    "draw_seed",
    "make_generator",
    "to_tensor",
    "to_numpy",
    "standardized_tensor",
    "training_data_device",
]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn a device name into an available ``torch.device``.

    ``"auto"`` picks CUDA, then MPS, then the CPU. Any other name is parsed
    by :class:`torch.device` and must be usable on this machine.

    Raises
    ------
    ValueError
        If the name is not a device, or names one this machine lacks.
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a torch device; use 'auto', 'cpu', "
            "'cuda', 'cuda:1', 'mps', ..."
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available "
                "on this machine; use device='auto' or device='cpu'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
    elif resolved.type == "mps" and not _mps_available():
        raise ValueError(
            f"device={device!r} was requested but MPS is not available on "
            "this machine; use device='auto' or device='cpu'."
        )
    # Other backends (xpu, ...) pass through: torch says if a kernel is missing.
    return resolved


def check_dtype_on_device(dtype: torch.dtype, device: torch.device) -> None:
    """Raise a clear error for dtypes a backend cannot run."""
    if device.type == "mps" and dtype == torch.float64:
        raise ValueError(
            "MPS does not support float64; use dtype='float32' or device='cpu'."
        )


def draw_seed(random_state) -> int:
    """Draw a 31-bit seed from an int, a ``RandomState`` or None."""
    rng = check_random_state(random_state)
    return int(rng.randint(np.iinfo(np.int32).max))


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def to_tensor(X: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Copy a numpy array to a tensor of ``dtype`` on ``device``.

    Always a copy, so no tensor ever shares memory with the caller's array.
    """
    return torch.tensor(np.asarray(X), dtype=dtype, device=device)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Return a float64 numpy array on the host."""
    return tensor.detach().to("cpu", torch.float64).numpy()


def standardized_tensor(
    X: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    device: torch.device,
    dtype: torch.dtype,
    block_rows: int = 2**16,
) -> torch.Tensor:
    """``(X - mean) / scale`` as a tensor, computed block by block.

    Never holds a standardized float64 copy of the whole of X: the extra
    memory is the tensor itself plus one block.
    """
    data = torch.empty(X.shape, dtype=dtype, device=device)
    for start in range(0, X.shape[0], block_rows):
        rows = slice(start, start + block_rows)
        data[rows] = torch.from_numpy((X[rows] - mean) / scale).to(device, dtype)
    return data


def training_data_device(n_bytes: int, device: torch.device) -> torch.device:
    """Where the training data live: on ``device`` if they fit, else the CPU.

    On an accelerator the data stay in CPU memory, and each minibatch is
    copied over, when they would take more than a quarter of its free memory
    (1 GiB where free memory cannot be queried).
    """
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free // 4
    else:
        budget = 2**30
    return device if n_bytes <= budget else torch.device("cpu")


def device_available(device: torch.device) -> bool:
    """Whether tensors can be placed on ``device`` on this machine."""
    if device.type == "cuda":
        index = device.index or 0
        return torch.cuda.is_available() and index < torch.cuda.device_count()
    if device.type == "mps":
        return _mps_available()
    return device.type == "cpu"


def on_available_device(
    module: torch.nn.Module, device: torch.device
) -> tuple[torch.nn.Module, torch.device]:
    """``module`` moved to ``device``, or to the CPU with a warning where this
    machine lacks it (a model fitted on a GPU, loaded without one)."""
    if not device_available(device):
        warnings.warn(
            f"This model was fitted on {device}, which is not available "
            "here; it is loaded on the CPU.",
            UserWarning,
            stacklevel=3,
        )
        device = torch.device("cpu")
    return module.to(device), device
