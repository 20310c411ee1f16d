"""Atomic writes: a file appears complete or not at all.

The bytes go to a new file beside the target, which is renamed over it once
complete and flushed to disk, so an interrupted write (a full disk, a
signal) leaves the previous file, if any, as it was. The new file is created
with the usual permissions (0o666 less the umask), like ``open(path, "w")``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["write_atomically"]


def write_atomically(
    path: str | os.PathLike, write: Callable[[BinaryIO], None]
) -> None:
    """Call ``write(file)`` on a new file beside ``path``, then rename it to
    ``path``; on any error the new file is removed and ``path`` untouched."""
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
