"""Capture what layers compute: the one way into a model's insides.

Everything in convlens that reads activations or gradients (feature maps, statistics,
top-k examples, CAMs) goes through :func:`capture`. It owns PyTorch forward hooks and
tensor hooks for the length of a ``with`` block, removes them on every exit path
(exceptions included, and removing twice is harmless), and leaves the model exactly as
it came in: hooks, ``training`` flags, ``requires_grad``, ``.grad`` and weights.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True))
>>> with capture(model, ["0", "1"]) as cap:
...     out = model(torch.randn(2, 1, 8, 8))
>>> cap["0"].shape, bool((cap["0"] < 0).any())  # the in-place ReLU did not touch it
(torch.Size([2, 4, 6, 6]), True)

Layers are addressed by their dotted names from ``model.named_modules()``. A module
called several times in one forward pass (a shared module) yields a list with one
tensor per call. Values are detached copies, unless ``gradients=True``: then they are
the live tensors of the autograd graph, and ``cap.gradients[name]`` holds the gradient of
whatever you call ``backward()`` on (inside the block) with respect to them.

The one-call form runs one forward (and, for gradients, one backward) pass::

    result = capture(model, ["conv2"]).run(x)                  # result.activations["conv2"]
    result = capture_once(model, x, ["conv2"], gradients=True, target=3)
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from convlens.errors import ConfigError, ConvlensError, LayerError, unknown_name

__all__ = [
    "Capture",
    "CaptureResult",
    "Captured",
    "capture",
    "capture_once",
    "layer_names",
    "observe",
    "resolve_layers",
]

#: What a layer yields: one tensor, or one per call for a module called several times.
Captured = Tensor | list[Tensor]
#: What to differentiate in the one-call form: a class index, one index per sample, or a
#: function of the model output returning a tensor (summed to a scalar).
Target = int | Sequence[int] | Tensor | Callable[[Any], Tensor] | None


class CaptureError(ConvlensError, RuntimeError):
    """A capture was used in a way that cannot give a correct answer."""


def layer_names(model: nn.Module) -> list[str]:
    """Dotted names of every submodule of ``model`` (the root itself excluded)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> dict[str, nn.Module]:
    """Map each requested dotted name to its module, or raise :class:`LayerError`.

    >>> resolve_layers(nn.Sequential(nn.ReLU()), "0")
    {'0': ReLU()}
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"expected a torch.nn.Module, got {type(model).__name__}; pass the model itself")
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ConfigError("no layers given: pass at least one dotted module name, e.g. 'conv1'")
    out: dict[str, nn.Module] = {}
    modules: dict[str, nn.Module] | None = None
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"layer names are strings (dotted names from named_modules()), got {name!r}")
        found = _lookup(model, name) if name else None
        if found is None:  # TorchScript containers, or a wrong name: ask named_modules()
            if modules is None:
                modules = dict(model.named_modules())
            found = modules.get(name) if name else None
            if found is None:
                raise LayerError(unknown_name("layer", name, [n for n in modules if n]))
        out[name] = found
    return out


def _lookup(model: nn.Module, name: str) -> nn.Module | None:
    """Follow a dotted name through ``_modules`` (what named_modules() joins), or None."""
    module = model
    for part in name.split("."):
        children = getattr(module, "_modules", None)
        child = children.get(part) if isinstance(children, dict) else None
        if not isinstance(child, nn.Module):
            return None
        module = child
    return module


def _is_scripted(module: nn.Module) -> bool:
    return isinstance(module, torch.jit.ScriptModule)


def _copy(value: Any) -> Any:
    """A detached copy of every tensor in ``value`` (tensors, tuples, lists, dicts)."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    return tree_map(lambda v: v.detach().clone() if isinstance(v, Tensor) else v, value)


# Copy only when needed. A captured tensor must keep the values the layer produced, but
# copying every output costs a memory pass per layer, several per cent of a small model's
# forward. So the first capture of a module's output (per kind and training mode) is a
# copy, and at the end of the block convlens checks the version counter of the original:
# if nothing changed it in place, later captures keep a detached alias (no copy) whose
# version is verified at the end of the block (and on reads inside it); if something did
# (an in-place ReLU, a residual `out += identity`), that module's output is always copied.
# A verification that fails raises CaptureError instead of returning changed values.
# Inference tensors have no version counter and are always copied.
_Key = tuple[str, bool]  # ("output" | "input", module.training)


class _Seen:
    """What convlens learned about one module: keys whose value stayed intact or changed."""

    __slots__ = ("changed", "safe")

    def __init__(self) -> None:
        self.safe: set[_Key] = set()
        self.changed: set[_Key] = set()


_SEEN: weakref.WeakKeyDictionary[nn.Module, _Seen] = weakref.WeakKeyDictionary()


def _seen(module: nn.Module) -> _Seen:
    seen = _SEEN.get(module)
    if seen is None:
        seen = _SEEN[module] = _Seen()
    return seen


def _learn(module: nn.Module, key: _Key, changed: bool) -> None:
    seen = _seen(module)
    if changed:
        seen.changed.add(key)
        seen.safe.discard(key)
    elif key not in seen.changed:
        seen.safe.add(key)


def _check_grad_mode(name: str) -> None:
    if torch.is_inference_mode_enabled():
        raise CaptureError(
            f"gradients requested for layer {name!r} inside torch.inference_mode(): no graph is "
            "built there; run the forward pass outside inference_mode"
        )
    if not torch.is_grad_enabled():
        raise CaptureError(
            f"gradients requested for layer {name!r} under torch.no_grad(): no graph is built "
            "there; run the forward pass with gradients enabled (torch.enable_grad())"
        )


@dataclasses.dataclass
class CaptureResult:
    """What the one-call form returns: the model output and what each layer held."""

    output: Any
    activations: dict[str, Captured]
    gradients: dict[str, Captured]

    def __getitem__(self, name: str) -> Captured:
        return self.activations[name]


class Capture(Mapping[str, Captured]):
    """Record the outputs (or inputs), and optionally gradients, of named layers.

    Use :func:`capture` to make one. As a mapping it goes from layer name to the captured
    tensor (a list of tensors when the module ran more than once); only layers that ran
    are keys. ``gradients`` is the same kind of mapping for the gradients.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str],
        *,
        gradients: bool = False,
        inputs: bool = False,
        copy: bool = False,
        on_value: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.model = model
        self._on_value = on_value
        if on_value is not None and gradients:
            raise ConfigError("observe() passes values to a function; it records no gradients")
        self._modules = resolve_layers(model, layers)
        for name, module in self._modules.items():
            if _is_scripted(module):
                raise CaptureError(
                    f"layer {name!r} is a TorchScript module, which cannot take hooks; capture "
                    "from the eager model before torch.jit.script, or from an eager module around it"
                )
        self.layers: tuple[str, ...] = tuple(self._modules)
        self.want_gradients = bool(gradients)
        self.inputs = bool(inputs)
        self.copy = bool(copy)
        self._values: dict[str, list[Any]] = {name: [] for name in self.layers}
        # per call: None for a copy, else the version the alias must still have when read
        self._versions: dict[str, list[tuple[int, _Key] | None]] = {name: [] for name in self.layers}
        # first captures of a module: (module, key, original alias, its version at capture)
        self._probes: list[tuple[nn.Module, _Key, Tensor, int]] = []
        self._grads: dict[str, dict[int, Tensor]] = {name: {} for name in self.layers}
        self._handles: list[Any] = []
        self._active = False

    # -- hooks -----------------------------------------------------------------------------

    def _keep(self, name: str, kind: str, module: nn.Module) -> Callable[[nn.Module, Any, Any], None]:
        """The forward hook body that records ``value`` without gradients.

        Called as ``keep(module, args, value)``: registered directly as a forward hook for
        outputs (one Python call per layer call), wrapped for inputs.
        """
        if self._on_value is not None:
            on_value = self._on_value

            def give(module: nn.Module, args: Any, value: Any) -> None:
                on_value(name, value)

            return give
        store = self._values[name]
        versions = self._versions[name]
        probes = self._probes
        always_copy = self.copy
        seen = _seen(module)  # shared with _learn: what it learns shows here
        safe, changed = seen.safe, seen.changed
        key_train: _Key = (kind, True)
        key_eval: _Key = (kind, False)

        def keep(module: nn.Module, args: Any, value: Any) -> None:
            if always_copy or type(value) is not Tensor or value.is_inference():
                store.append(_copy(value))
                versions.append(None)
                return
            key = key_train if module.training else key_eval
            alias = value.detach() if value.requires_grad else value  # same storage either way
            if key in safe:
                store.append(alias)
                versions.append((alias._version, key))
                return
            store.append(alias.clone())
            versions.append(None)
            if key not in changed:
                probes.append((module, key, alias, alias._version))

        return keep

    def _hook_output(self, name: str) -> Callable[..., Any]:
        if not self.want_gradients:
            return self._keep(name, "output", self._modules[name])

        def grad_hook(module: nn.Module, args: Any, output: Any) -> Tensor:
            live = self._live(name, output, "output")
            return live.clone()  # what the rest of the model sees: in-place ops hit this copy

        return grad_hook

    def _hook_input(self, name: str) -> Callable[..., Any]:
        if not self.want_gradients:
            keep = self._keep(name, "input", self._modules[name])

            def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
                if not args:
                    raise CaptureError(f"layer {name!r} was called without a positional input to capture")
                keep(module, args, args[0])

            return hook

        def grad_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            if not args:
                raise CaptureError(f"layer {name!r} was called without a positional input to capture")
            # The input tensor may have other consumers (a residual shortcut): record the
            # gradient on a private copy so it is the gradient through this layer only.
            live = self._live(name, args[0], "input", private=True)
            return (live.clone(), *args[1:])

        return grad_hook

    def _live(self, name: str, value: Any, what: str, *, private: bool = False) -> Tensor:
        """Keep ``value`` in the graph and record the gradient that reaches it.

        The returned tensor is stored; the caller hands a clone of it to the rest of the
        model, so in-place operations downstream cannot change what was stored.
        """
        _check_grad_mode(name)
        if not isinstance(value, Tensor):
            raise CaptureError(
                f"layer {name!r} has a {type(value).__name__} {what}; gradients need a tensor "
                "(capture a submodule that returns one)"
            )
        # A frozen model gives outputs that need no gradient: differentiate w.r.t. a leaf
        # holding the same values instead (only the graph downstream is needed).
        if value.requires_grad:
            live = value.clone() if private else value
        else:
            live = (value.detach().clone() if private else value.detach()).requires_grad_(True)
        store = self._values[name]
        index = len(store)
        store.append(live)
        self._versions[name].append(None)
        grads = self._grads[name]

        def record(grad: Tensor) -> None:
            grads[index] = grad.detach()

        self._handles.append(live.register_hook(record))
        return live

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> Capture:
        if self._active:
            raise CaptureError("this capture is already active; make a new one with capture(...)")
        self.clear()
        try:
            for name, module in self._modules.items():
                if self.inputs:
                    handle = module.register_forward_pre_hook(self._hook_input(name))
                else:
                    handle = module.register_forward_hook(self._hook_output(name))
                self._handles.append(handle)
        except BaseException:
            self.remove_hooks()
            raise
        self._active = True
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.remove_hooks()
        probes, self._probes[:] = list(self._probes), []
        if exc_type is not None:  # a forward pass cut short says nothing about in-place ops
            return
        for module, key, alias, version in probes:
            _learn(module, key, alias._version != version)
        for name in self.layers:
            self._verify(name)
            # settled: what the user does with the tensors from now on is their business
            self._versions[name][:] = [None] * len(self._versions[name])

    def remove_hooks(self) -> None:
        """Remove every hook this capture added. Safe to call any number of times."""
        handles, self._handles = self._handles, []
        try:
            for handle in handles:
                with contextlib.suppress(Exception):
                    handle.remove()
        finally:
            self._active = False

    def clear(self) -> None:
        """Forget everything recorded so far (between forward passes of one ``with`` block)."""
        for module, key, alias, version in self._probes:  # the last pass is complete
            _learn(module, key, alias._version != version)
        for name in self.layers:
            self._values[name].clear()
            self._versions[name].clear()
            self._grads[name].clear()
        self._probes.clear()

    # -- results -----------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Captured:
        values = self._values.get(name)
        if values is None:
            raise LayerError(unknown_name("captured layer", name, self.layers))
        if not values:
            raise CaptureError(
                f"layer {name!r} did not run: nothing was captured; run the model inside the "
                "`with` block, and check that its forward uses this module"
            )
        if self._active:
            self._verify(name)
        return values[0] if len(values) == 1 else list(values)

    def _verify(self, name: str) -> None:
        for value, check in zip(self._values[name], self._versions[name], strict=True):
            if check is not None and value._version != check[0]:
                _learn(self._modules[name], check[1], True)
                raise CaptureError(
                    f"the {'input' if self.inputs else 'output'} of layer {name!r} was changed in "
                    "place after it was captured (by the model or by code in the `with` block); "
                    "capture again (convlens now copies it), or pass copy=True"
                )

    def __iter__(self) -> Iterator[str]:
        return (name for name in self.layers if self._values[name])

    def __len__(self) -> int:
        return sum(1 for name in self.layers if self._values[name])

    def calls(self, name: str) -> list[Any]:
        """Every captured value of ``name``, one per call, as a list (possibly empty)."""
        if name not in self._values:
            raise LayerError(unknown_name("captured layer", name, self.layers))
        if self._active:
            self._verify(name)
        return list(self._values[name])

    @property
    def gradients(self) -> dict[str, Captured]:
        """Layer name -> gradient (a list per call for shared modules).

        Filled when ``backward()`` (or ``torch.autograd.grad``) runs inside the ``with`` block
        of a capture made with ``gradients=True``.
        """
        if not self.want_gradients:
            raise CaptureError("this capture records no gradients; use capture(..., gradients=True)")
        out: dict[str, Captured] = {}
        for name in self.layers:
            n = len(self._values[name])
            if n == 0:
                continue
            grads = self._grads[name]
            missing = [i for i in range(n) if i not in grads]
            if missing:
                raise CaptureError(
                    f"no gradient reached layer {name!r}"
                    + (f" (call {missing[0]})" if n > 1 else "")
                    + ": call backward() inside the `with` block, on something that depends on it"
                )
            out[name] = grads[0] if n == 1 else [grads[i] for i in range(n)]
        return out

    # -- one call ----------------------------------------------------------------------------

    def run(self, *args: Any, target: Target = None, **kwargs: Any) -> CaptureResult:
        """Run ``model(*args, **kwargs)`` once with the hooks in place and return everything.

        With ``gradients=True`` also runs one backward pass from ``target``: a class index
        (``output[:, target].sum()``), one index per sample, or a function of the output
        returning a tensor (its sum is differentiated). The model's parameter ``.grad``
        values are not touched (``torch.autograd.grad`` is used, not ``backward``).
        """
        if self.want_gradients and target is None:
            raise ConfigError(
                "gradients=True needs a target: a class index, one index per sample, or a "
                "function of the model output"
            )
        if not self.want_gradients and target is not None:
            raise ConfigError("target is only used with gradients=True")
        with self:
            if self.want_gradients:
                with torch.enable_grad():
                    output = self.model(*args, **kwargs)
                    scalar = _target_scalar(output, target)
                    lives = [v for name in self.layers for v in self._values[name]]
                    if not lives:
                        raise CaptureError(f"none of the layers {list(self.layers)} ran in the forward pass")
                    torch.autograd.grad(scalar, lives, allow_unused=True)
                grads = self.gradients
                activations = {name: _detached(self[name]) for name in self}
                output = _detached(output)
            else:
                output = self.model(*args, **kwargs)
                grads = {}
                activations = {name: self[name] for name in self}
        return CaptureResult(output, activations, grads)


def _detached(value: Captured) -> Captured:
    if isinstance(value, list):
        return [v.detach() for v in value]
    return value.detach() if isinstance(value, Tensor) else value


def _target_scalar(output: Any, target: Target) -> Tensor:
    if callable(target):
        value = target(output)
        if not isinstance(value, Tensor):
            raise ConfigError(f"the target function must return a tensor, got {type(value).__name__}")
        return value.sum()
    if not isinstance(output, Tensor) or output.dim() != 2:
        raise ConfigError(
            "a class-index target needs a model output of shape (batch, classes); pass a "
            "function of the output as target instead"
        )
    if isinstance(target, int):
        if not -output.shape[1] <= target < output.shape[1]:
            raise ConfigError(f"target class {target} is out of range for {output.shape[1]} classes")
        return output[:, target].sum()
    index = torch.as_tensor(target, dtype=torch.long, device=output.device).reshape(-1)
    if index.numel() != output.shape[0]:
        raise ConfigError(f"{index.numel()} target indices for a batch of {output.shape[0]}; give one per sample")
    if (index < 0).any() or (index >= output.shape[1]).any():
        raise ConfigError(f"target indices must be in 0..{output.shape[1] - 1}")
    return output.gather(1, index[:, None]).sum()


def capture(
    model: nn.Module,
    layers: str | Sequence[str],
    *,
    gradients: bool = False,
    inputs: bool = False,
    copy: bool = False,
) -> Capture:
    """Capture the outputs (``inputs=True``: the inputs) of ``layers`` of ``model``.

    ``layers`` are dotted names from ``model.named_modules()`` (one string or several).
    Use the result as a context manager around your forward pass, or call ``.run(x)``.
    Values are detached and keep what the layer produced even when the model later changes
    them in place; convlens copies a layer's output only when needed (see the module
    notes). ``copy=True`` copies always: use it if you will modify the model's returned
    output in place after the block while also capturing the last layer.

    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> x = torch.randn(1, 1, 5, 5)
    >>> with capture(model, "0") as cap:
    ...     y = model(x)
    >>> torch.equal(cap["0"], model[0](x))
    True
    """
    return Capture(model, layers, gradients=gradients, inputs=inputs, copy=copy)


def observe(
    model: nn.Module,
    layers: str | Sequence[str],
    fn: Callable[[str, Any], None],
    *,
    inputs: bool = False,
) -> Capture:
    """Call ``fn(name, value)`` with each layer's output (or input) as it is computed.

    Nothing is stored or copied: ``fn`` sees the live tensor before anything downstream can
    change it, and must neither keep nor modify it (reduce it, or copy what you need). This
    is how the dataset passes stream statistics with bounded memory. Hooks are owned the
    same way as in :func:`capture`.

    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True))
    >>> peaks = []
    >>> with torch.no_grad(), observe(model, ["0"], lambda n, v: peaks.append(v.amax().item())):
    ...     _ = model(torch.randn(1, 1, 5, 5))
    >>> len(peaks)
    1
    """
    return Capture(model, layers, inputs=inputs, on_value=fn)


def capture_once(
    model: nn.Module,
    x: Any,
    layers: str | Sequence[str],
    *,
    gradients: bool = False,
    inputs: bool = False,
    copy: bool = False,
    target: Target = None,
) -> CaptureResult:
    """One forward pass (and one backward pass from ``target`` if ``gradients``); see :meth:`Capture.run`."""
    return Capture(model, layers, gradients=gradients, inputs=inputs, copy=copy).run(x, target=target)
