"""Guided ReLUs for guided backpropagation, without touching the model.

Guided backpropagation (Springenberg et al. 2015) changes the backward pass of every ReLU:
only positive gradients pass, and only where the ReLU's input was positive,
``grad_in = (x > 0) * relu(grad_out)``. Peers swap the model's ``nn.ReLU`` modules or hook
them, which misses ReLUs applied as functions in ``forward`` and, done without ``finally``,
can leave the model altered.

:class:`GuidedReLUs` is a ``TorchFunctionMode``: while it is active, every ReLU call is seen,
whether it comes from an ``nn.ReLU`` module (which calls ``F.relu``) or from ``F.relu``,
``torch.relu``, ``torch.relu_`` or ``Tensor.relu``/``relu_`` written in ``forward``, in place
or not. On each ReLU output that is part of the graph it registers a *tensor* hook that,
while :attr:`GuidedReLUs.guided` is true, replaces the incoming gradient by its positive
part; the ReLU's own backward then applies ``(x > 0)``. Nothing is attached to the model:
the hooks belong to that forward pass's graph and vanish with it, and leaving the
``with`` block (normally or by an exception) ends the interception. Because the switch is
read at backward time, one forward pass serves both an ordinary backward pass (Grad-CAM,
saliency) and a guided one.

ReLUs written as ``clamp(min=0)`` or ``torch.maximum(x, 0)`` are not ReLU calls and are
left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

_RELUS: frozenset[Callable[..., Any]] = frozenset(
    {F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_}
)


class GuidedReLUs(TorchFunctionMode):
    """See the module docstring. ``seen`` counts the ReLU outputs that got a hook."""

    def __init__(self) -> None:
        super().__init__()
        self.guided = False
        self.seen = 0

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in _RELUS and isinstance(out, Tensor) and out.requires_grad:
            out.register_hook(self._positive)
            self.seen += 1
        return out

    def _positive(self, grad: Tensor) -> Tensor | None:
        return grad.clamp_min(0) if self.guided else None
