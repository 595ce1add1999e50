"""What every dataset split has, in memory or streamed: normalisation, labels by index or
class name, the checked index of one example (:class:`SplitMixin`, shared by
:class:`~convlens.data.ImageDataset` and :class:`~convlens.data.StreamingDataset`).

This module imports neither of them, so both can build on it.

>>> normalise(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8), (0.5,), (0.5,))[0, 0, 0, 0].item()
1.0
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, SupportsIndex

import torch

from convlens.errors import DataError, unknown_name

__all__ = ["SplitMixin", "normalise"]


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, as float32 on ``x``'s device.

    ``x`` holds pixel values on the 0..255 scale (uint8, or float in that range) and
    has channels in dimension -3 (``C×H×W`` or ``N×C×H×W``). ``x`` is not modified.
    """
    if x.dim() < 3:
        raise DataError(f"normalise expects C×H×W or N×C×H×W pixels, got shape {tuple(x.shape)}")
    c = x.shape[-3]
    if len(mean) != c or len(std) != c:
        raise DataError(
            f"normalise got {len(mean)} mean and {len(std)} std values for {c} channels; "
            "give one per channel"
        )
    m = torch.tensor(list(mean), dtype=torch.float32, device=x.device).view(c, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32, device=x.device).view(c, 1, 1)
    return x.to(torch.float32).div(255.0).sub_(m).div_(s)


class SplitMixin:
    """Label and index lookups of a dataset split. The class using it provides ``name``,
    ``split``, ``classes``, ``labels`` (int64 ``(N,)``), ``label_kind``, ``mean``, ``std``
    and ``__len__``."""

    name: str
    split: str
    label_kind: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    if TYPE_CHECKING:  # fields of ImageDataset, properties of StreamingDataset
        @property
        def classes(self) -> tuple[str, ...]: ...

        @property
        def labels(self) -> torch.Tensor: ...

        def __len__(self) -> int: ...

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise 0..255 pixels with this dataset's mean and std (see :func:`normalise`)."""
        return normalise(x, self.mean, self.std)

    def _describe(self, label: int) -> str:
        cls = self.classes[label]
        return f"{self.label_kind} {cls}" if self.label_kind == "digit" else f"{self.label_kind} {cls!r} (label {label})"

    def label_of(self, label: int | str) -> int:
        """The label index of ``label``, given as an index or a class name."""
        if isinstance(label, str):
            if label in self.classes:
                return self.classes.index(label)
            raise DataError(unknown_name(self.label_kind, label, self.classes))
        try:
            lab = operator.index(label)
        except TypeError:
            raise DataError(f"a label must be an integer or a class name, got {label!r}") from None
        if not 0 <= lab < len(self.classes):
            raise DataError(
                f"{self.label_kind} {lab} does not exist in {self.name}: labels run 0..{len(self.classes) - 1}"
            )
        return lab

    def index_of(self, label: int | str, nth: int = 0) -> int:
        """Index of the ``nth`` (0-based) example whose label is ``label`` (index or class name).

        Raises:
            DataError: the label does not exist, no example has it, or there are
                not ``nth + 1`` such examples.
        """
        lab = self.label_of(label)
        hits = (self.labels == lab).nonzero().flatten()
        what = self._describe(lab)
        if hits.numel() == 0:
            raise DataError(
                f"no {what} in {self.name} {self.split} ({len(self)} images); "
                f"choose another {self.label_kind} or an index"
            )
        nth = operator.index(nth)
        if not 0 <= nth < hits.numel():
            raise DataError(
                f"{self.name} {self.split} has {hits.numel()} examples of {what}; "
                f"nth={nth} must be in 0..{hits.numel() - 1}"
            )
        return int(hits[nth])

    def _check_index(self, index: object) -> int:
        n = len(self)
        if not isinstance(index, SupportsIndex):
            raise DataError(f"an index into {self.name} {self.split} must be an integer, got {index!r}")
        i = operator.index(index)
        if isinstance(index, bool) or not 0 <= i < n:
            valid = f"0..{n - 1}" if n else "none (the dataset is empty)"
            raise DataError(f"index {index!r} is out of range for {self.name} {self.split}: valid indices are {valid}")
        return i
