"""Names a package imports on first use (PEP 562), so that importing it stays light.

>>> getattr_, dir_ = lazy("demo", {"sqrt": "math"}, ["sqrt"], {})
>>> getattr_("sqrt")(9.0), dir_()
(3.0, ['sqrt'])
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any


def lazy(package: str, table: Mapping[str, str], names: list[str],
         namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module ``__getattr__`` and ``__dir__`` for ``package``: ``table`` maps each public
    name to the module that defines it; a name read once is kept in ``namespace`` (the
    package's ``globals()``), so later reads do not come back here."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__


def callable_package(package: str, function: Callable[..., Any]) -> None:
    """Make ``package`` callable as ``function``.

    ``convlens.train`` and ``convlens.diagnose`` each name a sub-package and that package's
    main function. Python binds the package to the name as soon as any of its modules is
    imported, which would hide the function; with this, calling the package calls the
    function, so ``convlens.train(...)`` works whichever of the two the name holds.
    """

    class CallablePackage(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

    CallablePackage.__call__.__doc__ = function.__doc__
    sys.modules[package].__class__ = CallablePackage
