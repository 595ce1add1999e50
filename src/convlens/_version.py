"""The installed version of convlens, the one place that knows it.

``importlib.metadata`` reads it from the installed distribution (``pip install -e .``
included). A source tree on ``sys.path`` without being installed falls back to the
``version`` in its ``pyproject.toml``, else to ``0+unknown``.

>>> version() == importlib.metadata.version("convlens")
True
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from pathlib import Path

DISTRIBUTION = "convlens"


def _source_version() -> str:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return "0+unknown"
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if project is None or not re.search(rf'^name\s*=\s*"{DISTRIBUTION}"', project.group(1), re.M):
        return "0+unknown"
    found = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.M)
    return found.group(1) if found else "0+unknown"


@functools.cache
def version() -> str:
    """``convlens``'s version: installed metadata, else the source tree's pyproject.toml."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return _source_version()
