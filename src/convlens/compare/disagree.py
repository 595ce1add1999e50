"""Where two models disagree: the inputs, the classes, and whether the accuracies differ.

One streamed pass over labelled data records both models' predictions. From them:
the inputs on which the predictions differ, each model's accuracy per class and the
difference (B − A), the agreement matrix (A's predicted class × B's predicted class), and
McNemar's exact test of the accuracy difference: among the inputs exactly one model gets
right (``a_only`` by A, ``b_only`` by B), the two-sided binomial test of an even split.

>>> mcnemar_exact(3, 12)  # 15 discordant inputs, 12 of them won by B
0.03515625
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from convlens.errors import DataError, positive_int
from convlens.inspect.pair import Side, check_labels, stream_pair

if TYPE_CHECKING:
    from convlens.inspect.passes import Data

__all__ = ["Disagreement", "disagreement", "mcnemar_exact"]


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: ``2 P(X ≤ min(a_only, b_only))``, X ~ Bin(a_only + b_only, ½), at most 1."""
    from scipy.stats import binom

    n = int(a_only) + int(b_only)
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(a_only, b_only), n, 0.5)))


@dataclass
class Disagreement:
    """Both models' predictions on labelled data and what follows from them."""

    labels: np.ndarray
    pred_a: np.ndarray
    pred_b: np.ndarray
    classes: tuple[str, ...]

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def indices(self) -> np.ndarray:
        """The inputs on which the two predictions differ."""
        return np.flatnonzero(self.pred_a != self.pred_b)

    @property
    def accuracy_a(self) -> float:
        return float((self.pred_a == self.labels).mean())

    @property
    def accuracy_b(self) -> float:
        return float((self.pred_b == self.labels).mean())

    @property
    def support(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))

    def per_class(self, side: Side) -> np.ndarray:
        """Accuracy of model ``side`` on each true class (NaN for a class with no inputs)."""
        pred = self.pred_a if side == "a" else self.pred_b
        right = np.bincount(self.labels[pred == self.labels], minlength=len(self.classes)).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.support > 0, right / np.maximum(self.support, 1), np.nan)

    @property
    def difference(self) -> np.ndarray:
        """Per class: accuracy of B minus accuracy of A."""
        return self.per_class("b") - self.per_class("a")

    @property
    def agreement(self) -> np.ndarray:
        """``agreement[i, j]``: inputs A calls class i and B calls class j."""
        k = len(self.classes)
        return np.bincount(self.pred_a * k + self.pred_b, minlength=k * k).reshape(k, k)

    @property
    def a_only(self) -> int:
        """Inputs A gets right and B gets wrong."""
        return int(((self.pred_a == self.labels) & (self.pred_b != self.labels)).sum())

    @property
    def b_only(self) -> int:
        return int(((self.pred_b == self.labels) & (self.pred_a != self.labels)).sum())

    @property
    def p_value(self) -> float:
        """McNemar's exact test of equal accuracy (see :func:`mcnemar_exact`)."""
        return mcnemar_exact(self.a_only, self.b_only)

    def summary(self) -> str:
        return (f"The models disagree on {len(self.indices):,} of {self.n:,} inputs ({len(self.indices) / self.n:.1%}); "
                f"accuracy A {self.accuracy_a:.2%}, B {self.accuracy_b:.2%}; {self.a_only} inputs only A gets right, "
                f"{self.b_only} only B (McNemar exact p = {self.p_value:.3g}).")

    def to_dict(self, limit: int = 200) -> dict[str, Any]:
        def nums(v: np.ndarray) -> list[float | None]:
            return [None if np.isnan(x) else float(x) for x in v]

        return {
            "n_inputs": self.n, "classes": list(self.classes), "accuracy_a": self.accuracy_a,
            "accuracy_b": self.accuracy_b, "disagreements": len(self.indices),
            "disagreement_indices": self.indices[:limit].tolist(), "a_only": self.a_only, "b_only": self.b_only,
            "mcnemar_p": self.p_value, "per_class_a": nums(self.per_class("a")), "per_class_b": nums(self.per_class("b")),
            "difference": nums(self.difference), "support": self.support.tolist(), "agreement": self.agreement.tolist(),
        }


class _Predictions:
    def __init__(self) -> None:
        self.parts: list[tuple[Tensor, Tensor, Tensor]] = []
        self.width = 0

    def update(self, side: Side, key: str, value: Tensor, offset: int) -> None:
        pass

    def finish(self, offset: int, x: Tensor, y: Tensor | None, out_a: Tensor, out_b: Tensor) -> None:
        labels = check_labels(y, x.shape[0])
        if out_a.dim() != 2 or out_b.dim() != 2 or out_a.shape[1] != out_b.shape[1]:
            raise DataError(f"the models score different classes (outputs {tuple(out_a.shape[1:])} and "
                            f"{tuple(out_b.shape[1:])}); compare models of the same classes")
        self.width = int(out_a.shape[1])
        self.parts.append((labels, out_a.argmax(1).cpu(), out_b.argmax(1).cpu()))


def disagreement(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Data,
    *,
    classes: Sequence[str] | None = None,
    batch_size: int = 256,
    progress: bool | None = None,
) -> Disagreement:
    """Both models' predictions on labelled ``data`` (an ImageDataset or ``(x, y)`` batches)."""
    batch_size = positive_int("batch_size", batch_size)
    reducer = _Predictions()
    stream_pair(model_a, model_b, data, [], [], [reducer], batch_size=batch_size, progress=progress,
                description="predicting")
    labels, pa, pb = (torch.cat(v).numpy() for v in zip(*reducer.parts, strict=True))
    names = tuple(classes) if classes is not None else tuple(getattr(data, "classes", ()) or
                                                             (str(i) for i in range(reducer.width)))
    if int(labels.max()) >= len(names) or reducer.width > len(names):
        raise DataError(f"labels run to {int(labels.max())} and the models score {reducer.width} classes, but "
                        f"{len(names)} class names were given")
    return Disagreement(labels, pa, pb, names)
