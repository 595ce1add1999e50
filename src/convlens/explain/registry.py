"""The registry of explanation methods: one name per method, driving the CLI and the tests.

>>> from convlens.explain import METHODS
>>> METHODS["gradcam"].title, METHODS["gradcam"].needs_layer
('Grad-CAM', True)

Add a method by subclassing :class:`~convlens.explain.base.Method` (usually
:class:`~convlens.explain.base.GradientCAM`) and decorating it with :func:`register_method`;
``convlens cam --method NAME`` and the parametrised tests pick it up.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeVar

from convlens.errors import ConfigError, unknown_name
from convlens.explain.base import Method

M = TypeVar("M", bound=type[Method])

_REGISTRY: dict[str, type[Method]] = {}

#: Method name -> method class, in registration order (read-only view).
METHODS: Mapping[str, type[Method]] = MappingProxyType(_REGISTRY)


def register_method(cls: M) -> M:
    """Class decorator: add ``cls`` to :data:`METHODS` under ``cls.name``."""
    name = cls.name
    if not name or name != name.strip() or name.lower() != name:
        raise ConfigError(f"method class {cls.__name__} needs a lower-case name, got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ConfigError(f"a method called {name!r} is already registered ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """The class registered as ``name``, or a ConfigError naming the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(unknown_name("explanation method", name, _REGISTRY)) from None


def list_methods(*, needs_layer: bool | None = None, perturbation: bool | None = None) -> list[str]:
    """Registered names, optionally only those with the given capabilities."""
    return [
        n for n, c in _REGISTRY.items()
        if (needs_layer is None or c.needs_layer == needs_layer)
        and (perturbation is None or c.perturbation == perturbation)
    ]
