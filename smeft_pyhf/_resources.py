"""Locate files shipped with the package (curated mappings, example workspaces, examples).

In a wheel the top-level ``mappings/`` and ``workspaces/`` folders are installed under
``smeft_pyhf/_shipped/``; in an editable install they are read from the repository root.

Example:
    >>> shipped_dir("mappings").name
    'mappings'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

__all__ = ["examples_dir", "shipped_dir"]

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(kind: Literal["mappings", "workspaces"]) -> Path:
    """Folder holding the shipped ``mappings`` or ``workspaces``."""
    installed = _PACKAGE / "_shipped" / kind
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / kind


def examples_dir() -> Path:
    """Folder of the embedded default inputs (runcard, cards, small tables)."""
    return _PACKAGE / "examples"
