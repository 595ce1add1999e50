"""The examples in the docstrings of convlens.conv and the receptive-field walker run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "convlens.conv.arithmetic",
    "convlens.conv.ops",
    "convlens.conv.kernels",
    "convlens.conv.explain",
    "convlens.inspect.receptive",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_conv_imports_numpy_only() -> None:
    import subprocess
    import sys

    code = "import sys, convlens.conv; print(sorted(m for m in ('torch', 'matplotlib', 'PIL', 'rich') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
