"""The front door: :func:`cam` for one method, :func:`explain` for several at once."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from convlens.errors import ConfigError
from convlens.explain.base import Explanation, Method
from convlens.explain.engine import run_methods
from convlens.explain.registry import METHODS, get_method
from convlens.inspect.targets import Target

MethodSpec = str | Method | type[Method]


@functools.cache
def _options(cls: type[Method]) -> tuple[str, ...]:
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in names:
                names.append(p.name)
    return tuple(names)


def method_options(cls: type[Method]) -> list[str]:
    """The keyword options a method class accepts (besides ``model`` and ``layer``)."""
    return list(_options(cls))


def make_method(method: MethodSpec, model: nn.Module, layer: str | Sequence[str] | None = None,
                **options: Any) -> Method:
    """A :class:`Method` instance from a registry name (or class) and its options."""
    if isinstance(method, Method):
        if layer is not None or options:
            raise ConfigError("pass layer and options when building the method, not with an instance")
        if method.model is not model:
            raise ConfigError(f"the {method.title} instance was built for a different model")
        return method
    else:
        cls = get_method(method) if isinstance(method, str) else method
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise ConfigError(f"method must be a name from convlens.explain.METHODS or a Method, got {method!r}")
    if options:
        valid = _options(cls)
        unknown = [k for k in options if k not in valid]
        if unknown:
            raise ConfigError(
                f"{cls.title} has no option {unknown[0]!r}; its options are {', '.join(valid) or 'none'}"
            )
    if not cls.needs_layer:
        if layer is not None:
            raise ConfigError(f"{cls.title} attributes to the input and reads no layer; drop layer={layer!r}")
        return cls(model, **options)
    return cls(model, layer, **options)  # Method.__init__ checks the model


def cam(
    model: nn.Module,
    x: Tensor,
    *,
    method: MethodSpec = "gradcam",
    layer: str | Sequence[str] | None = None,
    target: Target = None,
    **options: Any,
) -> Explanation:
    """Explain the model's prediction on ``x`` with one method.

    Args:
        model: any ``nn.Module`` returning scores ``(N, classes)``; left exactly as it came in.
        x: ``(N, C, H, W)`` inputs, normalised as the model expects (or one ``(C, H, W)``).
        method: a name from :data:`convlens.explain.METHODS` (``"gradcam"``, ``"scorecam"``,
            ``"saliency"``, ...), or a :class:`~convlens.explain.base.Method`.
        layer: dotted layer name(s) for CAM methods; ``None`` picks the last layer with a
            spatial output (:func:`~convlens.explain.base.default_layer`). Several layers
            give one map each in ``result.parts`` and a combined map.
        target: ``None``/``"pred"``, a class index, one index per sample, ``"top3"``, or a
            function of the logits (see :mod:`convlens.inspect.targets`).
        options: method options, e.g. ``batch_size=64`` for perturbation methods.

    Returns:
        An :class:`~convlens.explain.base.Explanation`: ``.maps`` ``(N, H, W)`` at input
        size, ``.raw`` at layer resolution (signed, unnormalised), ``.normalised``,
        ``.probabilities`` and ``.target``.

    >>> result = cam(model, x, method="gradcam", layer="conv2", target="pred")  # doctest: +SKIP
    >>> result.maps.shape, result.raw.shape                                     # doctest: +SKIP
    (torch.Size([1, 28, 28]), torch.Size([1, 14, 14]))
    """
    return run_methods(model, x, [make_method(method, model, layer, **options)], target)[0]


def explain(
    model: nn.Module,
    x: Tensor,
    methods: Sequence[MethodSpec] | str = "all",
    *,
    layer: str | Sequence[str] | None = None,
    target: Target = None,
    **options: Any,
) -> dict[str, Explanation]:
    """Explain ``x`` with several methods at once; they share one forward pass.

    ``methods`` is a list of names (or ``"all"`` for every registered method). ``layer``
    applies to the methods that read a layer; each option goes to every method that takes
    it (e.g. ``batch_size``). Returns name -> :class:`Explanation`, in the order asked.
    """
    names: list[MethodSpec] = list(METHODS) if methods == "all" else (
        [methods] if isinstance(methods, str) else list(methods)
    )
    if not names:
        raise ConfigError("no methods given: name at least one, e.g. methods=['gradcam']")
    built: list[Method] = []
    used: set[str] = set()
    for spec in names:
        if isinstance(spec, Method):
            built.append(spec)
            continue
        cls = get_method(spec) if isinstance(spec, str) else spec
        valid = _options(cls)
        mine = {k: v for k, v in options.items() if k in valid}
        used.update(mine)
        built.append(make_method(cls, model, layer if cls.needs_layer else None, **mine))
    unused = [k for k in options if k not in used]
    if unused:
        raise ConfigError(f"no method asked for takes the option {unused[0]!r}")
    keys = [m.name for m in built]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"methods repeat in {keys}; ask for each once")
    results = run_methods(model, x, built, target)
    return dict(zip(keys, results, strict=True))
