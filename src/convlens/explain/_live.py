"""The layer outputs a gradient pass differentiates with respect to, at the least cost.

Why this exists beside :func:`convlens.capture`: ``capture(..., gradients=True)`` clones
every captured output and registers a tensor hook per output to record its gradient, which
costs about a quarter of a forward-and-backward pass of a small CNN at batch 1 (measured
with ``benchmarks/cam.py``); that alone breaks the Grad-CAM overhead target there. The CAM
methods only need the live output tensors, to pass them to ``torch.autograd.grad``
themselves, so :class:`LiveOutputs` keeps exactly that and no more. It has the same
guarantees as ``capture``: hooks owned by a context manager and removed on every exit
path, the model otherwise untouched.

**Graph from the layer on** (``graph_from_layer=True``). A CAM needs gradients only from
the target score back to the layer, so the part of the forward pass before the layer need
not record a graph: the block runs with gradients off, and the first layer hook turns them
on and hands the rest of the model a leaf that requires gradients. This saves the
bookkeeping (and the memory of saved tensors) of everything upstream. Grad mode is
restored when the block ends, whatever happens. Input-gradient methods (saliency, guided
backpropagation) need the whole graph and do not use it.

**In-place operations.** Outputs are not copied, so an operation downstream that modifies
one in place (``nn.ReLU(inplace=True)`` after a conv, ``out += identity`` in a ResNet
block) would change what was kept: with the whole graph, the version counter shows it
(:meth:`LiveOutputs.check` returns False); with the graph from the layer, PyTorch refuses
to modify a leaf that requires gradients (:data:`INPLACE_ON_LEAF` in the error). Either
way the module is remembered and the caller runs the pass again; from then on the module's
output is kept and a clone is handed to the rest of the model, as ``capture`` always does.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from convlens.errors import ConfigError

#: Part of PyTorch's message when an in-place operation hits a leaf that requires grad.
INPLACE_ON_LEAF = "leaf Variable that requires grad"

# modules whose output something downstream modifies in place (learned, per module)
_MODIFIED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class LiveOutputs:
    """``with LiveOutputs(names, modules) as live: model(x)`` -> ``live.values[i]``.

    Each module must run exactly once in the forward pass.
    """

    __slots__ = ("_calls", "_handles", "_prev_grad", "_versions", "graph_from_layer", "modules", "names", "values")

    def __init__(self, names: Sequence[str], modules: Sequence[nn.Module], *, graph_from_layer: bool = False) -> None:
        self.names = tuple(names)
        self.modules = tuple(modules)
        self.graph_from_layer = graph_from_layer
        self.values: list[Tensor | None] = [None] * len(self.modules)
        self._versions = [0] * len(self.modules)
        self._calls = [0] * len(self.modules)
        self._handles: list[Any] = []
        self._prev_grad = True

    def _hook(self, i: int) -> Any:
        module = self.modules[i]
        name = self.names[i]
        values, versions, calls = self.values, self._versions, self._calls
        from_layer = self.graph_from_layer

        def hook(mod: nn.Module, args: Any, output: Any) -> Any:
            calls[i] += 1
            if not isinstance(output, Tensor):
                raise ConfigError(
                    f"layer {name!r} returns a {type(output).__name__}, not a tensor; pick a layer "
                    "whose output is a feature map (N, C, H, W)"
                )
            if from_layer:
                torch.set_grad_enabled(True)
            if not output.requires_grad:
                live = output.detach().requires_grad_(True)
                values[i] = live
                return live.clone() if module in _MODIFIED or not from_layer else live
            values[i] = output
            versions[i] = output._version
            return output.clone() if module in _MODIFIED else None

        return hook

    def __enter__(self) -> LiveOutputs:
        self._prev_grad = torch.is_grad_enabled()
        try:
            for i, module in enumerate(self.modules):
                self._handles.append(module.register_forward_hook(self._hook(i)))
            torch.set_grad_enabled(not self.graph_from_layer)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        handles, self._handles = self._handles, []
        try:
            for h in handles:
                h.remove()
        finally:
            torch.set_grad_enabled(self._prev_grad)

    def learn_inplace(self) -> None:
        """After a forward pass failed with :data:`INPLACE_ON_LEAF`: hand clones on from now on."""
        for module in self.modules:
            _MODIFIED.add(module)

    def check(self) -> bool:
        """After the forward pass: True if every output is intact; False (and the module
        remembered) if one was modified in place, in which case run the pass again."""
        ok = True
        for i, value in enumerate(self.values):
            if self._calls[i] != 1:
                raise ConfigError(
                    f"layer {self.names[i]!r} ran {self._calls[i]} times in one forward pass; a CAM "
                    "needs a layer that runs exactly once"
                )
            if value is not None and value._version != self._versions[i] and self.modules[i] not in _MODIFIED:
                _MODIFIED.add(self.modules[i])
                ok = False
        return ok
