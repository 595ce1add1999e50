"""What an explanation explains: which output score, for which sample.

A *target* picks one scalar score per sample from the model's output (the logits):

* ``None`` or ``"pred"``: the predicted class (the arg-max of the logits);
* an ``int`` (or a numeric string such as ``"7"``): that class for every sample;
* a sequence or 1-D tensor of ints: one class per sample;
* ``"top3"`` (or ``"top-3"``): the three highest-scoring classes of each sample; every
  sample then gets three maps, best class first;
* a callable ``f(logits) -> Tensor``: any score computed row-wise from ``(B, K)``
  logits, returning ``(B,)``. It must work for any batch size ``B``, because
  perturbation methods call it on batches of modified inputs.

Scores are logits (before softmax), as in the Grad-CAM paper and in captum, except where a
method's paper says otherwise (Score-CAM and the faithfulness metrics use probabilities).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from convlens.errors import ConfigError

#: Everything accepted as a target (see the module docstring).
Target = int | str | Sequence[int] | Tensor | Callable[[Tensor], Tensor] | None

_TOP = re.compile(r"top-?(\d+)")


class TargetPlan:
    """The targets resolved against a batch of logits.

    ``classes`` is ``(N, k)``: the class of round ``j`` for sample ``n`` (``-1`` where a
    function defines the score). Each round is explained with one backward pass (or one
    set of perturbed forward passes); the rows of a result are sample-major:
    row ``n * k + j`` explains sample ``n``, round ``j``.

    >>> logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 1.0, 2.0]])
    >>> plan = plan_targets("top2", logits)
    >>> plan.classes.tolist(), plan.score(logits, 1).tolist()
    ([[1, 2], [0, 2]], [1.0, 2.0])
    """

    def __init__(self, classes: Tensor, function: Callable[[Tensor], Tensor] | None = None) -> None:
        self.classes = classes
        self.function = function
        self.n, self.rounds = int(classes.shape[0]), int(classes.shape[1])

    def score(self, logits: Tensor, j: int = 0, rows: Tensor | None = None) -> Tensor:
        """Scores ``(B,)`` of round ``j`` in ``logits`` ``(B, K)``.

        ``rows`` (``(B,)``) says which sample each row of ``logits`` belongs to; without it
        row ``i`` is sample ``i``.
        """
        if self.function is not None:
            return call_target(self.function, logits)
        cls = self.classes[:, j] if rows is None else self.classes[rows, j]
        return logits.gather(1, cls.unsqueeze(1)).squeeze(1)

    def seed(self, logits: Tensor, j: int = 0) -> tuple[Tensor, Tensor]:
        """``(outputs, weights)`` whose weighted sum is the total of round ``j``'s target scores:
        for classes the logits and their one-hot rows, for a function its scores and ones.
        ``torch.autograd.grad(outputs, wrt, weights)`` is then the gradient of that total,
        without indexing and summing scores first."""
        if self.function is not None:
            scores = call_target(self.function, logits)
            return scores, torch.ones_like(scores)
        return logits, torch.zeros_like(logits).scatter_(1, self.classes[:, j : j + 1], 1.0)


def call_target(function: Callable[[Tensor], Tensor], logits: Tensor) -> Tensor:
    value = function(logits)
    if not isinstance(value, Tensor):
        raise ConfigError(f"a target function must return a tensor, got {type(value).__name__}")
    if value.shape == (logits.shape[0], 1):
        value = value.squeeze(1)
    if value.shape != (logits.shape[0],):
        raise ConfigError(
            f"a target function must return one score per row: shape ({logits.shape[0]},) "
            f"for logits of shape {tuple(logits.shape)}, got {tuple(value.shape)}"
        )
    return value


def parse_target(target: Target) -> Target:
    """Turn the command line's spellings (``"pred"``, ``"7"``, ``"top3"``) into a target."""
    if isinstance(target, str):
        t = target.strip().lower()
        if t in ("pred", "predicted"):
            return None
        if t.lstrip("-").isdigit():
            return int(t)
        if _TOP.fullmatch(t):
            return t
        raise ConfigError(
            f"unknown target {target!r}: use 'pred', a class index such as 7, or 'top3' for the "
            "three most likely classes"
        )
    return target


def plan_targets(target: Target, logits: Tensor) -> TargetPlan:
    """Resolve ``target`` (see the module docstring) against ``logits`` ``(N, K)``."""
    n = int(logits.shape[0])
    if callable(target) and not isinstance(target, Tensor):
        return TargetPlan(torch.full((n, 1), -1, dtype=torch.long, device=logits.device), function=target)
    if logits.dim() != 2:
        raise ConfigError(
            f"a class target needs logits of shape (batch, classes), the model returned shape "
            f"{tuple(logits.shape)}; pass a function of the output as target"
        )
    k = int(logits.shape[1])
    target = parse_target(target)
    if target is None:
        return TargetPlan(logits.argmax(1, keepdim=True))
    if isinstance(target, str):
        top = int(target.lstrip("top-"))
        if not 1 <= top <= k:
            raise ConfigError(f"{target!r} asks for {top} classes but the model has {k}; use top1..top{k}")
        return TargetPlan(logits.topk(top, dim=1).indices)
    if isinstance(target, bool):
        raise ConfigError(f"target must be a class index, 'pred', 'topK' or a function, got {target!r}")
    if isinstance(target, int):
        if not 0 <= target < k:
            raise ConfigError(f"target class {target} is out of range: the model has classes 0..{k - 1}")
        return TargetPlan(torch.full((n, 1), target, dtype=torch.long, device=logits.device))
    try:
        cls = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(
            f"target must be a class index, 'pred', 'topK', one class per sample or a function, got {target!r}"
        ) from None
    if cls.numel() != n:
        raise ConfigError(f"{cls.numel()} target classes for a batch of {n}; give one per sample")
    if bool(((cls < 0) | (cls >= k)).any()):
        raise ConfigError(f"target classes must be in 0..{k - 1}, got {cls.tolist()}")
    return TargetPlan(cls.unsqueeze(1))
