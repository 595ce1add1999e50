"""`convlens.viz` draws the numbers it is given: no module of it imports a computing layer
(conv, data, explain, inspect, models, train, views) or torch. Checked twice: by what a
fresh interpreter has loaded after importing every viz module, and by reading the import
statements (type-only imports under ``if TYPE_CHECKING:`` name the data drawn and are
allowed)."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import convlens.viz

COMPUTING = ("convlens.conv", "convlens.data", "convlens.explain", "convlens.inspect", "convlens.models",
             "convlens.train", "convlens.views", "torch")
VIZ = Path(convlens.viz.__file__).parent


def _viz_modules() -> list[str]:
    return ["convlens.viz"] + [f"convlens.viz.{m.name}" for m in pkgutil.iter_modules([str(VIZ)])]


def _computing(name: str) -> bool:
    return any(name == c or name.startswith(c + ".") for c in COMPUTING)


def test_importing_every_viz_module_loads_no_computing_layer() -> None:
    modules = _viz_modules()
    assert len(modules) > 8  # the walk found them
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(res.stdout)
    assert [m for m in loaded if _computing(m)] == []


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every import outside ``if TYPE_CHECKING:`` blocks."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_no_viz_source_imports_a_computing_layer() -> None:
    bad = []
    for path in sorted(VIZ.glob("*.py")):
        for line, module in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if _computing(module):
                bad.append(f"{path.name}:{line} imports {module}")
    assert bad == []


def test_the_scan_sees_imports_inside_functions() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from convlens.inspect.stats import LayerStats\n"
        "def f():\n    from convlens.explain import cam\n    import torch\n"
    )
    assert [m for _, m in _runtime_imports(tree)] == ["typing", "convlens.explain", "torch"]
