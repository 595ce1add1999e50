"""Capture what layers compute: the one way into a model's insides.

Everything in convlens that reads activations or gradients (feature maps, statistics,
top-k examples, CAMs, receptive fields, ablation) goes through this module, and no other
module registers hooks. It uses PyTorch's public hooks only: forward hooks and pre-hooks
on the named modules, tensor hooks for gradients of your own ``backward()``, and
``torch.autograd.grad``. Each capture owns its handles and removes them in ``finally``,
whatever order several captures close in, and records only the calls made in the thread
that entered it, so a server can explain concurrent requests on one shared model. The
model comes back exactly as it went in: hooks, ``forward``, ``training`` flags,
``requires_grad``, ``.grad`` and weights.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True))
>>> with capture(model, ["0", "1"]) as cap:
...     out = model(torch.randn(2, 1, 8, 8))
>>> cap["0"].shape, bool((cap["0"] < 0).any())  # the in-place ReLU did not touch it
(torch.Size([2, 4, 6, 6]), True)

Layers are addressed by their dotted names from ``model.named_modules()``. A module
called several times in one forward pass (a shared module) yields a list with one tensor
per call. In-place operations after a tapped layer (``ReLU(inplace=True)``,
``out += identity``) cannot change what was captured:

* without gradients a capture keeps a detached copy of each value;
* with ``gradients=True`` it keeps the live tensor of the autograd graph and hands the
  rest of the model a clone of it (as captum's hooks do). ``cap.grad(score)`` then
  computes the gradients of ``score`` with respect to the captured values, and
  ``cap.gradients`` holds what your own ``backward()`` inside the block sent there.

The one-call form runs one forward (and, for gradients, one backward) pass::

    result = capture(model, ["conv2"]).run(x)                  # result.activations["conv2"]
    result = capture_once(model, x, ["conv2"], gradients=True, target=3)
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from convlens.errors import ConfigError, ConvlensError, LayerError, unknown_name
from convlens.inspect.targets import Target, plan_targets

__all__ = [
    "Capture",
    "CaptureError",
    "CaptureResult",
    "Captured",
    "capture",
    "capture_once",
    "hooked",
    "layer_names",
    "observe",
    "replace_output",
    "resolve_layers",
]

#: What a layer yields: one tensor, or one per call for a module called several times.
Captured = Tensor | list[Tensor]
#: ``before(name, module, args)``: a non-None result replaces the positional arguments.
Before = Callable[[str, nn.Module, tuple[Any, ...]], Any]
#: ``after(name, module, args, output)``: a non-None result replaces the output.
After = Callable[[str, nn.Module, tuple[Any, ...], Any], Any]


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
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    if not names:
        raise ConfigError("no layers given: pass at least one dotted module name, e.g. 'conv1'")
    out: dict[str, nn.Module] = {}
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"layer names are strings (dotted names from named_modules()), got {name!r}")
        out[name] = _submodule(model, name)
    return out


def _submodule(model: nn.Module, name: str) -> nn.Module:
    if name:  # "" would be the model itself, which is not a layer
        try:
            return model.get_submodule(name)
        except AttributeError:
            pass
        except RuntimeError:  # a TorchScript root has no get_submodule
            found = dict(model.named_modules()).get(name)
            if found is not None:
                return found
    raise LayerError(unknown_name("layer", name, layer_names(model)))


def _check_hookable(name: str, module: nn.Module) -> None:
    if isinstance(module, torch.jit.ScriptModule):
        raise CaptureError(
            f"layer {name!r} is a TorchScript module, which cannot take hooks; capture from the "
            "eager model before torch.jit.script, or from an eager module around it"
        )


@contextlib.contextmanager
def hooked(
    modules: Mapping[str, nn.Module],
    *,
    before: Before | None = None,
    after: After | None = None,
    always_call: bool = False,
    any_thread: bool = False,
) -> Iterator[None]:
    """Forward pre-hooks (``before``) and forward hooks (``after``) on ``modules`` for the
    block, every handle removed in ``finally``: the primitive every hook in convlens uses.

    The hooks see only calls made in the thread that entered the block (``any_thread``:
    every thread, for ``nn.DataParallel``'s replicas). ``always_call`` runs ``after`` even
    when the module raised (see ``register_forward_hook``).
    """
    handles: list[RemovableHandle] = []
    try:
        _register(handles, modules, before, after, always_call=always_call, any_thread=any_thread)
        yield
    finally:
        _remove(handles)


def _register(handles: list[RemovableHandle], modules: Mapping[str, nn.Module], before: Before | None,
              after: After | None, *, always_call: bool = False, any_thread: bool = False) -> None:
    """Register the hooks of :func:`hooked`, appending each handle to ``handles`` as it is
    made (so that a failure halfway leaves nothing the caller cannot remove)."""
    thread = None if any_thread else threading.get_ident()
    for name, module in modules.items():
        _check_hookable(name, module)
        if before is not None:
            handles.append(module.register_forward_pre_hook(_pre(before, name, thread)))
        if after is not None:
            handles.append(module.register_forward_hook(_post(after, name, thread), always_call=always_call))


def _remove(handles: list[RemovableHandle]) -> None:
    while handles:
        handles.pop().remove()


def _pre(fn: Before, name: str, thread: int | None) -> Callable[[nn.Module, tuple[Any, ...]], Any]:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
        if thread is None or threading.get_ident() == thread:
            return fn(name, module, args)
        return None

    return hook


def _post(fn: After, name: str, thread: int | None) -> Callable[[nn.Module, tuple[Any, ...], Any], Any]:
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if thread is None or threading.get_ident() == thread:
            return fn(name, module, args, output)
        return None

    return hook


def _copy(value: Any) -> Any:
    """A detached copy of every tensor in ``value`` (tensors, tuples, lists, dicts)."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_copy(v) for v in value)
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _first_input(name: str, args: tuple[Any, ...]) -> Any:
    if not args:
        raise CaptureError(f"layer {name!r} was called without a positional input to capture")
    return args[0]


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
    ) -> None:
        self.model = model
        self._modules = resolve_layers(model, layers)
        for name, module in self._modules.items():
            _check_hookable(name, module)
        self.layers: tuple[str, ...] = tuple(self._modules)
        self.want_gradients = bool(gradients)
        self.inputs = bool(inputs)
        self._values: dict[str, list[Any]] = {name: [] for name in self.layers}
        self._grads: dict[str, dict[int, Tensor]] = {name: {} for name in self.layers}
        self._handles: list[RemovableHandle] = []  # forward hooks, then tensor hooks
        self._active = False

    # -- what a hook does --------------------------------------------------------------------

    def _keep(self, name: str, value: Any) -> Any:
        """Record ``value``; return what the rest of the model gets instead (or None)."""
        store = self._values[name]
        if not self.want_gradients:
            store.append(_copy(value))
            return None
        if not isinstance(value, Tensor):
            kind = "input" if self.inputs else "output"
            raise CaptureError(
                f"layer {name!r} has a {type(value).__name__} {kind}; gradients need a tensor "
                "(capture a submodule that returns one)"
            )
        if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
            raise CaptureError(
                f"gradients requested for layer {name!r} under torch.no_grad() or inside "
                "torch.inference_mode(): no graph is built there; run the forward pass with "
                "gradients enabled (torch.enable_grad())"
            )
        if value.requires_grad:
            # an input may feed other layers too (a residual shortcut): a node of its own
            # carries the gradient through this layer only
            live = value.view_as(value) if self.inputs else value
        else:  # a frozen model: a leaf holding the same values
            live = value.detach().requires_grad_(True)
        index = len(store)
        store.append(live)
        grads = self._grads[name]

        def record(grad: Tensor) -> None:
            grads[index] = grad.detach()

        self._handles.append(live.register_hook(record))
        return live.clone()  # what the model goes on with: in-place changes cannot reach `live`

    def _before(self, name: str, module: nn.Module, args: tuple[Any, ...]) -> Any:
        new = self._keep(name, _first_input(name, args))
        return None if new is None else (new, *args[1:])

    def _after(self, name: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        return self._keep(name, output)

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> Capture:
        if self._active:
            raise CaptureError("this capture is already active; make a new one with capture(...)")
        self.clear()
        self._active = True
        try:
            _register(self._handles, self._modules, self._before if self.inputs else None,
                      None if self.inputs else self._after, any_thread=isinstance(self.model, nn.DataParallel))
        except BaseException:
            self.remove_hooks()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove_hooks()

    def remove_hooks(self) -> None:
        """Remove everything this capture added to the model. Safe to call any number of times."""
        _remove(self._handles)
        self._active = False

    def clear(self) -> None:
        """Forget everything recorded so far (between forward passes of one ``with`` block)."""
        for values in self._values.values():
            values.clear()
        for grads in self._grads.values():
            grads.clear()

    # -- results -----------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Captured:
        values = self.calls(name)
        if not values:
            raise CaptureError(
                f"layer {name!r} did not run: nothing was captured; run the model inside the "
                "`with` block, and check that its forward uses this module"
            )
        return values[0] if len(values) == 1 else values

    def __iter__(self) -> Iterator[str]:
        return (name for name in self.layers if self._values[name])

    def __len__(self) -> int:
        return sum(1 for name in self.layers if self._values[name])

    def calls(self, name: str) -> list[Any]:
        """Every captured value of ``name``, one per call, as a list (possibly empty)."""
        if name not in self._values:
            raise LayerError(unknown_name("captured layer", name, self.layers))
        return list(self._values[name])

    @property
    def gradients(self) -> dict[str, Captured]:
        """Layer name -> gradient (a list per call for shared modules).

        Filled when ``backward()`` (or ``torch.autograd.grad``) runs inside the ``with`` block
        of a capture made with ``gradients=True``, or by :meth:`grad`.
        """
        self._need_gradients()
        out: dict[str, Captured] = {}
        for name in self:
            n, grads = len(self._values[name]), self._grads[name]
            missing = [i for i in range(n) if i not in grads]
            if missing:
                raise CaptureError(
                    f"no gradient reached layer {name!r}" + (f" (call {missing[0]})" if n > 1 else "")
                    + ": call backward() inside the `with` block (or cap.grad(score)), on something "
                    "that depends on it"
                )
            out[name] = grads[0] if n == 1 else [grads[i] for i in range(n)]
        return out

    def _need_gradients(self) -> None:
        if not self.want_gradients:
            raise CaptureError("this capture records no gradients; use capture(..., gradients=True)")

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
        self._need_gradients()
        if not isinstance(score, Tensor):
            raise ConfigError(f"score must be a tensor computed from the model output, got {type(score).__name__}")
        lives = [(name, i, v) for name in self.layers for i, v in enumerate(self._values[name])]
        if not lives:
            raise CaptureError(f"none of the layers {list(self.layers)} ran in the forward pass")
        if not score.requires_grad:
            raise CaptureError("the score does not depend on the captured layers (it requires no grad); "
                               "compute it from the output of the forward pass in the block")
        weights = torch.ones_like(score) if grad_outputs is None else grad_outputs
        grads = torch.autograd.grad(score, [v for _, _, v in lives], weights, retain_graph=retain_graph,
                                    allow_unused=True)
        for (name, i, v), g in zip(lives, grads, strict=True):
            if g is None:
                if not allow_unused:
                    raise CaptureError(f"the score does not depend on layer {name!r}; pass allow_unused=True for zeros")
                g = torch.zeros_like(v)
            self._grads[name][i] = g
        return self.gradients

    # -- one call ----------------------------------------------------------------------------

    def run(self, *args: Any, target: Target = None, **kwargs: Any) -> CaptureResult:
        """Run ``model(*args, **kwargs)`` once with the hooks in place and return everything.

        With ``gradients=True`` also runs one backward pass from ``target`` (see
        :mod:`convlens.inspect.targets`: ``None`` for the predicted class, a class index,
        one index per sample, or a function of the output returning one score per
        sample); the scores are summed over the batch. No parameter's ``.grad`` is touched.
        """
        if not self.want_gradients:
            if target is not None:
                raise ConfigError("target is only used with gradients=True")
            with torch.no_grad(), self:
                output = self.model(*args, **kwargs)
            return CaptureResult(output, {name: self[name] for name in self}, {})
        with torch.enable_grad():
            with self:
                output = self.model(*args, **kwargs)
            if not isinstance(output, Tensor):
                raise ConfigError(f"the model returned a {type(output).__name__}; a target needs a tensor of scores")
            plan = plan_targets(target, output.detach())
            if plan.rounds != 1:
                raise ConfigError(f"capture differentiates one score per sample; {target!r} asks for {plan.rounds}")
            grads = self.grad(plan.score(output))
        activations = {name: _detached(self[name]) for name in self}
        return CaptureResult(output.detach(), activations, grads)


def _detached(value: Captured) -> Captured:
    if isinstance(value, list):
        return [v.detach() for v in value]
    return value.detach()


def capture(
    model: nn.Module,
    layers: str | Sequence[str],
    *,
    gradients: bool = False,
    inputs: bool = False,
) -> Capture:
    """Capture the outputs (``inputs=True``: the first positional inputs) of ``layers``.

    ``layers`` are dotted names from ``model.named_modules()`` (one string or several).
    Use the result as a context manager around your forward pass, or call ``.run(x)``.
    Without gradients the values are detached copies. With ``gradients=True`` they are the
    live tensors of the graph (the model goes on with clones of them), for
    ``cap.grad(score)`` or your own ``backward()`` inside the block.

    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> x = torch.randn(1, 1, 5, 5)
    >>> with capture(model, "0") as cap:
    ...     y = model(x)
    >>> torch.equal(cap["0"], model[0](x))
    True
    >>> with capture(model, "0", gradients=True) as cap:
    ...     y = model(x)
    >>> cap.grad(y.sum())["0"].shape
    torch.Size([1, 2, 3, 3])
    """
    return Capture(model, layers, gradients=gradients, inputs=inputs)


def capture_once(
    model: nn.Module,
    x: Any,
    layers: str | Sequence[str],
    *,
    gradients: bool = False,
    inputs: bool = False,
    target: Target = None,
) -> CaptureResult:
    """One forward pass (and one backward pass from ``target`` if ``gradients``); see :meth:`Capture.run`."""
    return Capture(model, layers, gradients=gradients, inputs=inputs).run(x, target=target)


def observe(
    model: nn.Module,
    layers: str | Sequence[str],
    fn: Callable[[str, Any], None],
    *,
    inputs: bool = False,
) -> contextlib.AbstractContextManager[None]:
    """Call ``fn(name, value)`` with each layer's output (or first input) as it is computed.

    Nothing is stored or copied: ``fn`` sees the live tensor before anything downstream can
    change it, and must neither keep nor modify it (reduce it, or copy what you need). This
    is how the dataset passes stream statistics with bounded memory. The hooks are owned
    as in :func:`capture`.

    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True))
    >>> peaks = []
    >>> with torch.no_grad(), observe(model, ["0"], lambda n, v: peaks.append(v.amax().item())):
    ...     _ = model(torch.randn(1, 1, 5, 5))
    >>> len(peaks)
    1
    """
    modules = resolve_layers(model, layers)
    parallel = isinstance(model, nn.DataParallel)
    if inputs:
        return hooked(modules, before=lambda name, m, args: fn(name, _first_input(name, args)), any_thread=parallel)
    return hooked(modules, after=lambda name, m, args, out: fn(name, out), any_thread=parallel)


def replace_output(model: nn.Module, layer: str, fn: Callable[[Tensor], Tensor]) -> contextlib.AbstractContextManager[None]:
    """For the block, the rest of ``model`` gets ``fn(output)`` instead of ``layer``'s output.

    The one place convlens changes a model's forward pass (Ablation-CAM zeroes channels
    with it); ``fn`` must return a new tensor, not modify its argument.

    >>> model = nn.Sequential(nn.Identity(), nn.ReLU())
    >>> with replace_output(model, "0", lambda out: out * 0):
    ...     model(torch.ones(1, 2)).sum().item()
    0.0
    """
    modules = resolve_layers(model, layer)
    return hooked(modules, after=lambda name, m, args, out: fn(out))
