"""Reading numpydoc docstrings, so documentation is written once."""

from __future__ import annotations

import re

__all__ = ["numpydoc_section", "replace_entry"]


def numpydoc_section(doc: str, title: str) -> str:
    """The body of the section ``title`` of a class docstring (4-space indent)."""
    match = re.search(
        rf"\n    {title}\n    -+\n(.*?)(?=\n    [A-Z][A-Za-z ]+\n    -+\n|\Z)",
        doc,
        flags=re.S,
    )
    return match.group(1).rstrip() + "\n"


def replace_entry(section: str, name: str, entry: str | None) -> str:
    """``section`` with the entry of the parameter ``name`` replaced by
    ``entry`` (its ``name : type`` line and text, 4-space indent), or
    removed for None."""
    pattern = rf"    {name} : .*?\n(?=    \w+ : |\Z)"
    new = "" if entry is None else entry + "\n"
    replaced, count = re.subn(pattern, new, section, count=1, flags=re.S)
    if count != 1:
        raise ValueError(f"no entry {name!r} in the section")
    return replaced
