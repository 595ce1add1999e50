"""Capture what layers compute: the one way into a model's insides.

Everything in convlens that reads activations or gradients (feature maps, statistics,
top-k examples, CAMs) goes through :func:`capture`. For the length of a ``with`` block it
taps the named modules (by wrapping their ``forward``, or with forward hooks where a
wrapper would not see the same thing; see "How a module is tapped" below) and, for
gradients, optionally tensor hooks. It removes all of it on every exit path (exceptions
included, and removing twice is harmless), and leaves the model exactly as it came in:
hooks, ``forward``, ``training`` flags, ``requires_grad``, ``.grad`` and weights.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True))
>>> with capture(model, ["0", "1"]) as cap:
...     out = model(torch.randn(2, 1, 8, 8))
>>> cap["0"].shape, bool((cap["0"] < 0).any())  # the in-place ReLU did not touch it
(torch.Size([2, 4, 6, 6]), True)

Layers are addressed by their dotted names from ``model.named_modules()``. A module
called several times in one forward pass (a shared module) yields a list with one
tensor per call. Values are detached (copies where the model changes them in place),
unless ``gradients=True``: then they are the live tensors of the autograd graph, and
``cap.gradients[name]`` holds the gradient of whatever you call ``backward()`` on (inside
the block) with respect to them; ``cap.grad(score)`` computes them directly, without
touching any ``.grad``.

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
from torch.nn.modules.module import _global_forward_hooks
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
    names = (layers,) if isinstance(layers, str) else layers
    out: dict[str, nn.Module] = {}
    modules: dict[str, nn.Module] | None = None
    for name in names:
        found = _lookup(model, name) if type(name) is str and name else None
        if found is None:  # TorchScript containers, or a wrong name: ask named_modules()
            if not isinstance(name, str):
                raise ConfigError(f"layer names are strings (dotted names from named_modules()), got {name!r}")
            if modules is None:
                modules = dict(model.named_modules())
            found = modules.get(name) if name else None
            if found is None:
                raise LayerError(unknown_name("layer", name, [n for n in modules if n]))
        out[name] = found
    if not out:
        raise ConfigError("no layers given: pass at least one dotted module name, e.g. 'conv1'")
    return out


def _lookup(model: nn.Module, name: str) -> nn.Module | None:
    """Follow a dotted name through ``_modules`` (what named_modules() joins), or None."""
    module: Any = model
    for part in name.split(".") if "." in name else (name,):
        children = getattr(module, "_modules", None)
        module = children.get(part) if type(children) is dict else None
        if not isinstance(module, nn.Module):
            return None
    return module


_SCRIPTED = torch.jit.ScriptModule


def _copy(value: Any) -> Any:
    """A detached copy of every tensor in ``value`` (tensors, tuples, lists, dicts)."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    return tree_map(lambda v: v.detach().clone() if isinstance(v, Tensor) else v, value)


# How a module is tapped. Any forward hook sends every call of its module through
# nn.Module's slow call path (closures, a try block, hook bookkeeping), and registering and
# removing hooks costs more than a small model's layer does: with hooks, a capture block
# cost 1.21x a seed-cnn forward pass at batch 1 (benchmarks/README.md). So for the length of the block convlens wraps the
# module's ``forward`` (an instance attribute, which ``_call_impl`` calls on its fast path)
# and restores it on exit. It falls back to ordinary forward hooks where a wrapper would see
# something else than a hook registered last: outputs of a module with forward hooks of its
# own (they may change the output) or while global forward hooks exist, and any module of a
# model wrapped in nn.DataParallel (whose replicas would call the original's forward). A
# wrapper sees a module's arguments after its pre-hooks, as a last pre-hook would.
# (the module's __dict__, the wrapper, the ``forward`` it held before or _MISSING)
_Wrapped = tuple[dict[str, Any], Callable[..., Any], Any]
_MISSING = object()


def _wrap_after(module: nn.Module, after: Callable[[nn.Module, Any, Any], Any]) -> _Wrapped:
    """Call ``after(module, args, output)`` after each forward; a non-None result replaces
    the output. Returns what :meth:`Capture.remove_hooks` needs to restore the module."""
    own = module.__dict__
    forward = module.forward

    def tapped(*args: Any, **kwargs: Any) -> Any:
        out = forward(*args, **kwargs)
        new = after(module, args, out)
        return out if new is None else new

    previous = own.get("forward", _MISSING)
    own["forward"] = tapped
    return own, tapped, previous


def _wrap_before(module: nn.Module, before: Callable[[nn.Module, tuple[Any, ...]], Any]) -> _Wrapped:
    """Call ``before(module, args)`` before each forward; a non-None result replaces the args."""
    own = module.__dict__
    forward = module.forward

    def tapped(*args: Any, **kwargs: Any) -> Any:
        new = before(module, args)
        return forward(*(args if new is None else new), **kwargs)

    previous = own.get("forward", _MISSING)
    own["forward"] = tapped
    return own, tapped, previous


# Copy only when needed. A captured tensor must keep the values the layer produced, but
# copying every output costs a memory pass per layer, several per cent of a small model's
# forward. So the first capture of a module's output (per kind and training mode) is a
# copy, and at the end of the block convlens checks the version counter of what the rest of
# the model received: if nothing changed it in place, later captures keep an alias (no
# copy) whose version is verified at the end of the block (and on reads inside it); if
# something did (an in-place ReLU, a residual `out += identity`), that module's output is
# always copied. A verification that fails raises CaptureError instead of returning changed
# values. Inference tensors have no version counter and are always copied. With gradients
# the same holds for the live tensor: the rest of the model gets it directly once it is
# known to be safe, else a clone.
_Key = tuple[str, bool]  # ("output" | "input", module.training)
_OUT_TRAIN: _Key = ("output", True)
_OUT_EVAL: _Key = ("output", False)


class _Seen:
    """What convlens learned about one module: keys whose value stayed intact or changed."""

    __slots__ = ("changed", "safe")

    def __init__(self) -> None:
        self.safe: set[_Key] = set()
        self.changed: set[_Key] = set()


# id(module) -> (a weak reference to it, what was learned). A plain dict with weak
# references rather than a WeakKeyDictionary, whose lookups cost several times more (this
# sits on the path of every capture); the entry goes when the module does.
_SEEN: dict[int, tuple[weakref.ReferenceType[nn.Module], _Seen]] = {}


def _seen(module: nn.Module) -> _Seen:
    key = id(module)
    entry = _SEEN.get(key)
    if entry is not None and entry[0]() is module:
        return entry[1]
    seen = _Seen()

    def forget(ref: weakref.ReferenceType[nn.Module]) -> None:
        if _SEEN.get(key, (None,))[0] is ref:
            del _SEEN[key]

    _SEEN[key] = (weakref.ref(module, forget), seen)
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


# Switch the grad mode without building a context object: ``torch.set_grad_enabled`` is a
# class, and this is the function its constructor calls (0.10 µs against 0.27 in a warm
# loop; it sits on the path of every gradient capture).
set_grad_mode: Callable[[bool], Any] = getattr(torch._C, "_set_grad_enabled", torch.set_grad_enabled)


#: Part of PyTorch's message when an in-place operation hits a leaf that requires grad.
_INPLACE_ON_LEAF = "leaf Variable that requires grad"


class InPlaceChange(CaptureError):
    """A captured value was changed in place after capture. convlens has learned it and
    copies that layer from now on: running the forward pass again gives correct values."""


# The autograd engine, called the way torch.autograd.grad calls it but without its Python
# preamble (argument normalisation, subclass dispatch, logging hooks), a noticeable share of
# a small CNN's backward pass at batch 1 (benchmarks/parts.py). Used for plain CPU tensors
# only; anything else goes through torch.autograd.grad.
_ENGINE = getattr(getattr(torch.autograd, "Variable", None), "_execution_engine", None)


def autograd_grad(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    grad_outputs: Sequence[Tensor],
    *,
    retain_graph: bool = False,
) -> tuple[Tensor | None, ...]:
    """``torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True)``: ``None``
    for an input the outputs do not depend on; ``.grad`` of leaves is not touched."""
    outs, ins, gos = tuple(outputs), tuple(inputs), tuple(grad_outputs)
    if _ENGINE is not None and all(type(t) is Tensor and t.is_cpu for t in outs + ins):
        try:
            return tuple(_ENGINE.run_backward(outs, gos, retain_graph, False, ins, True, accumulate_grad=False))
        except TypeError:  # a future engine signature: the public way below
            pass
    return torch.autograd.grad(outs, ins, gos, retain_graph=retain_graph, allow_unused=True)


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

    __slots__ = (
        "_active", "_bare", "_checks", "_dirty", "_grads", "_handles", "_modules", "_on_value", "_prev_grad",
        "_probes", "_taps", "_values", "_wrapped", "backward_hooks", "copy", "graph_from_layers", "inputs",
        "layers", "model", "want_gradients",
    )

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str] | dict[str, nn.Module],
        *,
        gradients: bool = False,
        inputs: bool = False,
        copy: bool = False,
        on_value: Callable[[str, Any], None] | None = None,
        backward_hooks: bool = True,
        graph_from_layers: bool = False,
    ) -> None:
        self.model = model
        self._on_value = on_value
        if on_value is not None and gradients:
            raise ConfigError("observe() passes values to a function; it records no gradients")
        if graph_from_layers and not gradients:
            raise ConfigError("graph_from_layers=True only matters with gradients=True")
        # a dict of already resolved modules is taken as it is (convlens's own callers)
        self._modules = dict(layers) if isinstance(layers, dict) else resolve_layers(model, layers)
        for name, module in self._modules.items():
            if isinstance(module, _SCRIPTED):
                raise CaptureError(
                    f"layer {name!r} is a TorchScript module, which cannot take hooks; capture "
                    "from the eager model before torch.jit.script, or from an eager module around it"
                )
        self.layers: tuple[str, ...] = tuple(self._modules)
        self.want_gradients = bool(gradients)
        self.inputs = bool(inputs)
        self.copy = bool(copy)
        self.backward_hooks = bool(backward_hooks)
        self.graph_from_layers = bool(graph_from_layers)
        self._values: dict[str, list[Any]] = {name: [] for name in self.layers}
        # aliases to verify at the end of the block: (value, its version then, module, name);
        # a failed check is learned under the module's training flag at that time
        self._checks: list[tuple[Tensor, int, nn.Module, str]] = []
        # first captures of a module: (module, key, what the model received, its version then)
        self._probes: list[tuple[nn.Module, _Key, Tensor, int]] = []
        self._grads: dict[str, dict[int, Tensor]] = {name: {} for name in self.layers} if gradients else {}
        self._taps: dict[str, Callable[..., Any]] = {}  # built when first needed
        self._wrapped: list[_Wrapped] = []
        self._handles: list[Any] = []  # forward hooks where a wrapper will not do, tensor hooks
        # live leaves handed to the model as they are (known safe): (module, key)
        self._bare: list[tuple[nn.Module, _Key]] = []
        self._active = False
        self._dirty = False  # something was recorded since the last clear()
        self._prev_grad = True

    # -- what a tap does -------------------------------------------------------------------

    def _keep(self, name: str, kind: str, module: nn.Module) -> Callable[[nn.Module, Any, Any], None]:
        """Record ``value`` without gradients: called as ``keep(module, args, value)``."""
        if self._on_value is not None:
            on_value = self._on_value

            def give(module: nn.Module, args: Any, value: Any) -> None:
                on_value(name, value)

            return give
        store = self._values[name]
        checks = self._checks
        probes = self._probes
        always_copy = self.copy
        seen = _seen(module)  # shared with _learn: what it learns shows here
        safe, changed = seen.safe, seen.changed
        key_train: _Key = (kind, True)
        key_eval: _Key = (kind, False)

        def keep(module: nn.Module, args: Any, value: Any) -> None:
            if always_copy or type(value) is not Tensor or value.is_inference():
                store.append(_copy(value))
                return
            key = key_train if module.training else key_eval
            alias = value.detach() if value.requires_grad else value  # same storage either way
            if key in safe:
                store.append(alias)
                checks.append((alias, alias._version, module, name))
                return
            store.append(alias.clone())
            if key not in changed:
                probes.append((module, key, alias, alias._version))

        return keep

    def _live(self, name: str, kind: str, module: nn.Module) -> Callable[[nn.Module, Any, Any], Tensor]:
        """Keep a value in the graph: ``live(module, args, value)`` stores the live tensor and
        returns what the rest of the model gets (the tensor itself once known to be safe,
        else a clone, so that in-place operations downstream cannot change what is kept)."""
        store = self._values[name]
        checks = self._checks
        probes = self._probes
        grads = self._grads[name]
        always_copy = self.copy
        hooks = self.backward_hooks
        from_layers = self.graph_from_layers
        tensor_hooks = self._handles
        bare = self._bare
        seen = _seen(module)
        safe, changed = seen.safe, seen.changed
        key_train: _Key = (kind, True)
        key_eval: _Key = (kind, False)

        def live(module: nn.Module, args: Any, value: Any) -> Tensor:
            if from_layers:
                set_grad_mode(True)  # the graph starts here (restored on exit)
            else:
                _check_grad_mode(name)
            if not isinstance(value, Tensor):
                raise CaptureError(
                    f"layer {name!r} has a {type(value).__name__} {kind}; gradients need a tensor "
                    "(capture a submodule that returns one)"
                )
            key = key_train if module.training else key_eval
            private = kind == "input" and key in changed  # something else changes the input in place
            if value.requires_grad:
                # an input may feed other layers too (a residual shortcut): a tensor of its
                # own carries the gradient through this layer only
                tensor = value if kind == "output" else value.clone() if private else value.view_as(value)
            else:  # a frozen model, or the graph starts here: a leaf holding the same values
                tensor = (value.detach().clone() if private else value.detach()).requires_grad_(True)
            index = len(store)
            store.append(tensor)
            checks.append((tensor, tensor._version, module, name))  # verified at the end
            if hooks:
                def record(grad: Tensor, index: int = index) -> None:
                    grads[index] = grad.detach()

                tensor_hooks.append(tensor.register_hook(record))
            if key in safe and not always_copy:
                if tensor.is_leaf:  # PyTorch refuses in-place changes of it: see __exit__
                    bare.append((module, key))
                return tensor
            handed = tensor.clone()
            if key not in changed:
                probes.append((module, key, handed, handed._version))
            return handed

        return live

    def _tap(self, name: str, module: nn.Module) -> Callable[..., Any]:
        tap = self._taps.get(name)
        if tap is None:
            tap = self._taps[name] = self._make_tap(name, module)
        return tap

    def _wrap_keep(self, name: str, module: nn.Module) -> _Wrapped:
        """:func:`_wrap_after` with ``keep``'s common case inlined (the hot path of capture):
        an output already known to be safe is kept as it is, and checked at the end (what
        ``clear()`` learns between passes of one block shows here at once)."""
        own = module.__dict__
        forward = module.forward
        store = self._values[name]
        checks = self._checks
        safe = _seen(module).safe

        def tapped(*args: Any, **kwargs: Any) -> Any:
            out = forward(*args, **kwargs)
            if (_OUT_TRAIN if module.training else _OUT_EVAL) in safe and type(out) is Tensor and not out.requires_grad:
                try:
                    checks.append((out, out._version, module, name))
                except RuntimeError:  # an inference tensor has no version counter: copied below
                    pass
                else:
                    store.append(out)
                    return out
            self._tap(name, module)(module, args, out)
            return out

        previous = own.get("forward", _MISSING)
        own["forward"] = tapped
        return own, tapped, previous

    def _make_tap(self, name: str, module: nn.Module) -> Callable[..., Any]:
        """What records ``name``: ``after(module, args, output)`` (outputs) or
        ``before(module, args)`` (inputs), in the signature of a forward (pre-)hook."""
        if not self.inputs:
            if self.want_gradients:
                return self._live(name, "output", module)
            return self._keep(name, "output", module)

        if self.want_gradients:
            live = self._live(name, "input", module)

            def before(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
                if not args:
                    raise CaptureError(f"layer {name!r} was called without a positional input to capture")
                return (live(module, args, args[0]), *args[1:])

            return before
        keep = self._keep(name, "input", module)

        def peek(module: nn.Module, args: tuple[Any, ...]) -> None:
            if not args:
                raise CaptureError(f"layer {name!r} was called without a positional input to capture")
            keep(module, args, args[0])

        return peek

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> Capture:
        if self._active:
            raise CaptureError("this capture is already active; make a new one with capture(...)")
        if self.graph_from_layers and torch.is_inference_mode_enabled():
            _check_grad_mode(self.layers[0])
        if self._dirty:
            self.clear()
        self._dirty = self._active = True
        self._prev_grad = torch.is_grad_enabled()
        inputs = self.inputs
        parallel = isinstance(self.model, nn.DataParallel)  # see "How a module is tapped"
        fast = not (inputs or self.want_gradients or self.copy or self._on_value is not None)
        try:
            for name, module in self._modules.items():
                if parallel or (not inputs and (module._forward_hooks or _global_forward_hooks)):
                    hook = module.register_forward_pre_hook if inputs else module.register_forward_hook
                    self._handles.append(hook(self._tap(name, module)))
                elif fast:
                    self._wrapped.append(self._wrap_keep(name, module))
                else:
                    self._wrapped.append((_wrap_before if inputs else _wrap_after)(module, self._tap(name, module)))
            if self.graph_from_layers:
                set_grad_mode(False)  # no graph before the first captured layer
        except BaseException:
            self.remove_hooks()
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.remove_hooks()
        if exc_type is not None:  # a forward pass cut short says nothing about in-place ops...
            self._probes.clear()
            if isinstance(exc, RuntimeError) and self._bare and _INPLACE_ON_LEAF in str(exc):
                # ...unless PyTorch refused to change a live leaf in place: copy from now on
                for module, key in self._bare:
                    _learn(module, key, True)
                raise InPlaceChange(
                    f"the model changes the {'input' if self.inputs else 'output'} of a captured "
                    f"layer ({', '.join(self.layers)}) in place, which a gradient capture cannot "
                    "allow; run the forward pass again (convlens now hands the model a copy)"
                ) from exc
            return
        if self._probes:
            for module, key, handed, version in self._probes:
                _learn(module, key, handed._version != version)
            self._probes.clear()
        if self._checks:
            self._verify()

    def remove_hooks(self) -> None:
        """Remove everything this capture added to the model (and restore the grad mode it
        set for ``graph_from_layers``). Safe to call any number of times."""
        try:
            if self._wrapped:
                for own, tapped, previous in self._wrapped:
                    if own.get("forward") is tapped:  # else someone replaced it: theirs stays
                        if previous is _MISSING:
                            del own["forward"]
                        else:
                            own["forward"] = previous
                self._wrapped.clear()
            if self._handles:
                handles, self._handles = self._handles, []
                for handle in handles:
                    with contextlib.suppress(Exception):
                        handle.remove()
        finally:
            if self._active and self.graph_from_layers:
                set_grad_mode(self._prev_grad)
            self._active = False

    def clear(self) -> None:
        """Forget everything recorded so far (between forward passes of one ``with`` block)."""
        for module, key, handed, version in self._probes:  # the last pass is complete
            _learn(module, key, handed._version != version)
        self._probes.clear()
        self._bare.clear()
        self._checks.clear()
        for values in self._values.values():
            values.clear()
        for grads in self._grads.values():
            grads.clear()

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
            self._verify()
        return values[0] if len(values) == 1 else list(values)

    def _verify(self) -> None:
        for value, version, module, name in self._checks:
            if value._version != version:
                _learn(module, ("input" if self.inputs else "output", module.training), True)
                self._checks.clear()
                raise InPlaceChange(
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
            self._verify()
        return list(self._values[name])

    @property
    def gradients(self) -> dict[str, Captured]:
        """Layer name -> gradient (a list per call for shared modules).

        Filled when ``backward()`` (or ``torch.autograd.grad``) runs inside the ``with`` block
        of a capture made with ``gradients=True``, or by :meth:`grad`.
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
                    + ": call backward() inside the `with` block (or cap.grad(score)), on something "
                    "that depends on it"
                )
            out[name] = grads[0] if n == 1 else [grads[i] for i in range(n)]
        return out

    def grad(
        self,
        score: Tensor,
        grad_outputs: Tensor | None = None,
        *,
        retain_graph: bool = False,
        allow_unused: bool = False,
    ) -> dict[str, Captured]:
        """The gradient of ``score`` with respect to every captured value, in one backward pass.

        ``score`` is a scalar, or a tensor whose sum is differentiated (``grad_outputs``
        weights its entries instead, as in ``torch.autograd.grad``). Nothing accumulates in
        any ``.grad``. A layer the score does not depend on is an error, or zeros with
        ``allow_unused=True``. Works inside the block and after it (the live tensors are
        kept); the result is also what :attr:`gradients` returns afterwards.
        """
        if not self.want_gradients:
            raise CaptureError("this capture records no gradients; use capture(..., gradients=True)")
        if not isinstance(score, Tensor):
            raise ConfigError(f"score must be a tensor computed from the model output, got {type(score).__name__}")
        lives = [(name, i, v) for name in self.layers for i, v in enumerate(self._values[name])]
        if not lives:
            raise CaptureError(f"none of the layers {list(self.layers)} ran in the forward pass")
        if not score.requires_grad:
            raise CaptureError("the score does not depend on the captured layers (it requires no grad); "
                               "compute it from the output of the forward pass in the block")
        go = torch.ones_like(score) if grad_outputs is None else grad_outputs
        grads = autograd_grad((score,), [v for _, _, v in lives], (go,), retain_graph=retain_graph)
        for (name, i, v), g in zip(lives, grads, strict=True):
            if g is None:
                if not allow_unused:
                    raise CaptureError(
                        f"the score does not depend on layer {name!r}; pass allow_unused=True for zeros"
                    )
                g = torch.zeros_like(v)
            self._grads[name][i] = g
        return self.gradients

    # -- one call ----------------------------------------------------------------------------

    def run(self, *args: Any, target: Target = None, **kwargs: Any) -> CaptureResult:
        """Run ``model(*args, **kwargs)`` once with the taps in place and return everything.

        With ``gradients=True`` also runs one backward pass from ``target``: a class index
        (``output[:, target].sum()``), one index per sample, or a function of the output
        returning a tensor (its sum is differentiated). The model's parameter ``.grad``
        values are not touched. If the model changed a captured value in place, the pass
        runs once more (convlens then copies that layer).
        """
        if self.want_gradients and target is None:
            raise ConfigError(
                "gradients=True needs a target: a class index, one index per sample, or a "
                "function of the model output"
            )
        if not self.want_gradients and target is not None:
            raise ConfigError("target is only used with gradients=True")
        for attempt in range(2):
            try:
                return self._run_once(args, kwargs, target)
            except InPlaceChange:
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _run_once(self, args: tuple[Any, ...], kwargs: dict[str, Any], target: Target) -> CaptureResult:
        if not self.want_gradients:
            with self:
                output = self.model(*args, **kwargs)
            return CaptureResult(output, {name: self[name] for name in self}, {})
        with torch.enable_grad():
            with self:
                output = self.model(*args, **kwargs)
            grads = self.grad(_target_scalar(output, target))
        activations = {name: _detached(self[name]) for name in self}
        return CaptureResult(_detached(output), activations, grads)


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
    backward_hooks: bool = True,
    graph_from_layers: bool = False,
) -> Capture:
    """Capture the outputs (``inputs=True``: the inputs) of ``layers`` of ``model``.

    ``layers`` are dotted names from ``model.named_modules()`` (one string or several).
    Use the result as a context manager around your forward pass, or call ``.run(x)``.
    Values are detached and keep what the layer produced even when the model later changes
    them in place; convlens copies a layer's output only when needed (see the module
    notes). ``copy=True`` copies always: use it if you will modify the model's returned
    output in place after the block while also capturing the last layer.

    With ``gradients=True`` the values are live tensors of the graph. Two options make
    gradient capture cheaper when you know what you need:

    * ``backward_hooks=False``: no tensor hooks; gradients come only from
      :meth:`Capture.grad` (``cap.grad(score)``), not from your own ``backward()``.
    * ``graph_from_layers=True``: the block runs with gradients off until the first
      captured layer, so no graph is recorded upstream of it (parameters and inputs before
      the layers get no gradient); the grad mode is restored on exit. What a CAM needs.

    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> x = torch.randn(1, 1, 5, 5)
    >>> with capture(model, "0") as cap:
    ...     y = model(x)
    >>> torch.equal(cap["0"], model[0](x))
    True
    >>> with capture(model, "0", gradients=True, graph_from_layers=True) as cap:
    ...     y = model(x)
    >>> cap.grad(y.sum())["0"].shape
    torch.Size([1, 2, 3, 3])
    """
    return Capture(model, layers, gradients=gradients, inputs=inputs, copy=copy,
                   backward_hooks=backward_hooks, graph_from_layers=graph_from_layers)


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
