"""Reading numpydoc docstrings, so documentation is written once."""

from __future__ import annotations

import re

__all__ = ["numpydoc_section"]


def numpydoc_section(doc: str, title: str) -> str:
    """The body of the section ``title`` of a class docstring (4-space indent)."""
    match = re.search(
        rf"\n    {title}\n    -+\n(.*?)(?=\n    [A-Z][A-Za-z ]+\n    -+\n|\Z)",
        doc,
        flags=re.S,
    )
    return match.group(1).rstrip() + "\n"
