"""The layer outputs a gradient pass differentiates with respect to, at the least cost.

Why this exists beside :func:`convlens.capture`: ``capture(..., gradients=True)`` clones
every captured output and registers a tensor hook per output to record its gradient, which
costs about a quarter of a forward-and-backward pass of a small CNN at batch 1 (measured
in ``benchmarks/cam.py``); that alone breaks the Grad-CAM overhead target there. The CAM
methods only need the live output tensor, to pass it to ``torch.autograd.grad``
themselves, so :func:`live_outputs` keeps exactly that and no more. It has the same
guarantees as ``capture``: hooks owned by a context manager and removed on every exit
path, the model otherwise untouched.

It does not copy outputs, so an operation downstream that modifies an output in place
(``nn.ReLU(inplace=True)`` right after a conv, ``out += identity`` in a ResNet block)
would change what was kept. Each output's version counter is therefore checked after the
forward pass: :attr:`LiveOutputs.changed` is True if any changed, and the caller runs the
pass again; the module is remembered, and from then on its output is kept and a clone is
handed to the rest of the model (as ``capture`` always does). Outputs that do not require
gradients (a frozen model) become leaves that do, with a clone handed on, so that the
graph downstream exists and in-place operations on it stay legal.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from convlens.errors import ConfigError

# modules whose output something downstream modifies in place (learned, per module)
_MODIFIED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class LiveOutputs:
    """``with LiveOutputs(modules) as live: model(x)`` -> ``live.values[i]`` per module.

    Each module must run exactly once in the forward pass.
    """

    def __init__(self, names: Sequence[str], modules: Sequence[nn.Module]) -> None:
        self.names = tuple(names)
        self.modules = tuple(modules)
        self.values: list[Tensor | None] = [None] * len(self.modules)
        self._versions: list[int] = [0] * len(self.modules)
        self._calls = [0] * len(self.modules)
        self._handles: list[Any] = []

    def _hook(self, i: int) -> Any:
        module = self.modules[i]

        def hook(mod: nn.Module, args: Any, output: Any) -> Any:
            self._calls[i] += 1
            if not isinstance(output, Tensor):
                raise ConfigError(
                    f"layer {self.names[i]!r} returns a {type(output).__name__}, not a tensor; "
                    "pick a layer whose output is a feature map (N, C, H, W)"
                )
            if not output.requires_grad:
                live = output.detach().requires_grad_(True)
                self.values[i] = live
                return live.clone()
            self.values[i] = output
            self._versions[i] = output._version
            return output.clone() if module in _MODIFIED else None

        return hook

    def __enter__(self) -> LiveOutputs:
        try:
            for i, module in enumerate(self.modules):
                self._handles.append(module.register_forward_hook(self._hook(i)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        handles, self._handles = self._handles, []
        for h in handles:
            h.remove()

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
            assert value is not None
            if value._version != self._versions[i] and self.modules[i] not in _MODIFIED:
                _MODIFIED.add(self.modules[i])
                ok = False
        return ok
