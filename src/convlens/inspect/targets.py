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
    """

    __slots__ = ("_classes", "_like", "fixed", "function", "n", "rounds")

    def __init__(
        self,
        n: int,
        like: Tensor,
        *,
        classes: Tensor | None = None,
        fixed: int | None = None,
        function: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.n = n
        self._like = like  # the logits: where the classes live (read when first needed)
        self._classes = classes
        self.fixed = fixed
        self.function = function
        self.rounds = 1 if classes is None else int(classes.shape[1])

    @property
    def device(self) -> torch.device:
        return self._like.device

    @property
    def classes(self) -> Tensor:
        if self._classes is None:
            value = -1 if self.fixed is None else self.fixed
            self._classes = torch.full((self.n, 1), value, dtype=torch.long, device=self.device)
        return self._classes

    def score(self, logits: Tensor, j: int = 0, rows: Tensor | None = None) -> Tensor:
        """Scores ``(B,)`` of round ``j`` in ``logits`` ``(B, K)``.

        ``rows`` (``(B,)``) says which sample each row of ``logits`` belongs to; without it
        row ``i`` is sample ``i``.
        """
        if self.function is not None:
            return call_target(self.function, logits)
        if self.fixed is not None:
            return logits[:, self.fixed]
        cls = self.classes[:, j] if rows is None else self.classes[rows, j]
        return logits.gather(1, cls.unsqueeze(1)).squeeze(1)


    def seed(self, logits: Tensor, j: int = 0) -> tuple[Tensor, Tensor]:
        """What to differentiate for round ``j``, as ``(tensor, weights)``: the gradient of
        ``sum(weights * tensor)`` is the gradient of the summed target scores. For classes
        that is the logits with a one-hot weight (cheaper to differentiate than indexing
        and summing); for a function target, its scores with weight one."""
        if self.function is not None:
            scores = call_target(self.function, logits)
            return scores, torch.ones_like(scores)
        if self.fixed is not None:
            return logits, _one_hot(logits, self.fixed)
        weights = torch.zeros_like(logits)
        weights.scatter_(1, self.classes[:, j : j + 1], 1.0)
        return logits, weights


# One-hot seeds for a fixed class, reused across calls (CPU only): making one costs three
# tensor operations, a noticeable share of a small model's Grad-CAM. The autograd engine
# only reads it; should anything change it in place (a custom autograd Function writing
# into its incoming gradient), its version counter shows it and a fresh one is made.
_ONE_HOT: dict[tuple[tuple[int, ...], int, torch.dtype], tuple[Tensor, int]] = {}


def _one_hot(logits: Tensor, cls: int) -> Tensor:
    key = (tuple(logits.shape), cls, logits.dtype)
    if logits.is_cpu:
        cached = _ONE_HOT.get(key)
        if cached is not None and cached[0]._version == cached[1]:
            return cached[0]
    weights = torch.zeros_like(logits)
    weights.select(1, cls).fill_(1)
    if logits.is_cpu:
        if len(_ONE_HOT) >= 64:
            _ONE_HOT.clear()
        _ONE_HOT[key] = (weights, weights._version)
    return weights


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
    if type(target) is int and logits.dim() == 2 and 0 <= target < logits.shape[1]:
        return TargetPlan(n, logits, fixed=target)  # the common case, first
    if callable(target) and not isinstance(target, Tensor):
        return TargetPlan(n, logits, function=target)
    if logits.dim() != 2:
        raise ConfigError(
            f"a class target needs logits of shape (batch, classes), the model returned shape "
            f"{tuple(logits.shape)}; pass a function of the output as target"
        )
    k = int(logits.shape[1])
    target = parse_target(target)
    if target is None:
        return TargetPlan(n, logits, classes=logits.argmax(1, keepdim=True))
    if isinstance(target, str):
        top = int(target.lstrip("top-"))
        if not 1 <= top <= k:
            raise ConfigError(f"{target!r} asks for {top} classes but the model has {k}; use top1..top{k}")
        return TargetPlan(n, logits, classes=logits.topk(top, dim=1).indices)
    if isinstance(target, bool):
        raise ConfigError(f"target must be a class index, 'pred', 'topK' or a function, got {target!r}")
    if isinstance(target, int):
        if not 0 <= target < k:
            raise ConfigError(f"target class {target} is out of range: the model has classes 0..{k - 1}")
        return TargetPlan(n, logits, fixed=target)
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
    return TargetPlan(n, logits, classes=cls.unsqueeze(1))
