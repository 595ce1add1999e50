"""What every dataset split has, in memory or streamed: batches, normalisation, labels by
index or class name, the checked index of one example (:class:`SplitMixin`, shared by
:class:`~convlens.data.ImageDataset` and :class:`~convlens.data.StreamingDataset`).

This module imports neither of them, so both can build on it.

>>> normalise(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8), (0.5,), (0.5,))[0, 0, 0, 0].item()
1.0
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, SupportsIndex

import torch

from convlens.errors import DataError, positive_int, unknown_name

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
    """Batches, normalisation and label and index lookups of a dataset split. The class
    using it provides ``name``, ``split``, ``classes``, ``labels`` (int64 ``(N,)``),
    ``label_kind``, ``mean``, ``std``, ``__len__``, and ``_home``/``_rows`` (where its
    images are; the uint8 images and labels of a run of positions)."""

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

        def _home(self) -> torch.device:
            """Where the images are (the default device of :meth:`batches`)."""

        def _rows(self, start: int, stop: int, order: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            """uint8 images ``(B, C, H, W)`` and int64 labels ``(B,)`` at positions
            ``start..stop - 1`` of the epoch (of ``order`` when it is shuffled)."""

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        drop_last: bool = False,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of ``(x, y)`` batches: x float32 ``(B, C, H, W)`` normalised, y int64 ``(B,)``.

        With ``shuffle`` the order is one ``torch.randperm(N, generator=generator)`` per
        call, so a seeded generator gives a reproducible order; batches are gathered by
        tensor indexing. The uint8 batch is moved to ``device`` (default: where the
        images are) and normalised there.

        ``augment``, if given, is called on each *uint8* batch ``(B, C, H, W)`` on
        ``device`` before normalisation, so zero fill means black background (e.g.
        ``lambda x: random_shift(x, 2, gen)``); it must return a new uint8 tensor of
        the same shape and must not modify its input in place (without ``shuffle`` it
        is a view of the dataset).
        """
        batch_size = positive_int("batch_size", batch_size)
        home = self._home()
        dev = torch.device(device) if device is not None else home
        order = torch.randperm(len(self), generator=generator).to(home) if shuffle else None
        return self._iter(batch_size, order, dev, drop_last, augment)

    def _iter(self, batch_size: int, order: torch.Tensor | None, dev: torch.device, drop_last: bool,
              augment: Callable[[torch.Tensor], torch.Tensor] | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        stop = n - n % batch_size if drop_last else n
        non_blocking = dev.type == "cuda"
        for start in range(0, stop, batch_size):
            xb, yb = self._rows(start, min(start + batch_size, n), order)
            xb = xb.to(dev, non_blocking=non_blocking)
            yb = yb.to(dev, non_blocking=non_blocking)
            if augment is not None:
                xb = augment(xb)
            yield self.normalise(xb), yb

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
