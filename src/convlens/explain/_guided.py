"""Guided ReLUs for guided backpropagation, without touching the model.

Guided backpropagation (Springenberg et al. 2015) changes the backward pass of every ReLU:
only positive gradients pass, and only where the ReLU's input was positive,
``grad_in = (x > 0) * relu(grad_out)``. Peers swap the model's ``nn.ReLU`` modules or hook
them, which misses ReLUs applied as functions in ``forward`` and, done without ``finally``,
can leave the model altered.

:class:`GuidedReLUs` is a ``TorchFunctionMode``: while it is active, every ReLU call is seen,
whether it comes from an ``nn.ReLU`` module (which calls ``F.relu``) or from ``F.relu``,
``torch.relu``, ``torch.relu_`` or ``Tensor.relu``/``relu_`` written in ``forward``, in place
or not, and is computed by a small autograd function of convlens instead. Its backward pass
is ReLU's, ``grad_in = (x > 0) * grad_out``, except while :meth:`GuidedReLUs.backward` is
active, when it lets only the positive part of ``grad_out`` through. Nothing is attached
to the model or to any tensor: leaving the ``with`` block (normally or by an exception)
ends the interception. Because the switch is read at backward time, one forward pass
serves both an ordinary backward pass (Grad-CAM, saliency) and a guided one.

ReLUs written as ``clamp(min=0)`` or ``torch.maximum(x, 0)`` are not ReLU calls and are
left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

_RELUS: frozenset[Callable[..., Any]] = frozenset(
    {F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_}
)
_IN_PLACE: frozenset[Callable[..., Any]] = frozenset({F.relu_, torch.relu_, Tensor.relu_})


class _GuidedReLU(torch.autograd.Function):
    """``relu(x)``; its backward is guided while ``mode.guided`` is true."""

    @staticmethod
    def forward(x: Tensor, mode: GuidedReLUs) -> Tensor:
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, mode = inputs
        ctx.mode = mode
        ctx.save_for_backward(x > 0)  # the mask, not x: an in-place ReLU overwrites x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (positive,) = ctx.saved_tensors
        if ctx.mode.guided:
            grad = grad.clamp_min(0)
        return torch.where(positive, grad, torch.zeros_like(grad)), None


class GuidedReLUs(TorchFunctionMode):
    """See the module docstring. ``seen`` counts the ReLU calls that were recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.guided = False
        self.seen = 0

    @contextlib.contextmanager
    def backward(self) -> Iterator[None]:
        """Backward passes run in the block are guided."""
        self.guided = True
        try:
            yield
        finally:
            self.guided = False

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        x = args[0] if args else kwargs.get("input")
        if func not in _RELUS or not isinstance(x, Tensor) or not (x.requires_grad and torch.is_grad_enabled()):
            return func(*args, **kwargs)
        self.seen += 1
        out = _GuidedReLU.apply(x, self)
        in_place = func in _IN_PLACE or bool(kwargs.get("inplace", len(args) > 1 and args[1]))
        return x.copy_(out) if in_place else out
