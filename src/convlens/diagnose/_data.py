"""What :func:`convlens.diagnose` reads: labelled data in batches, and inputs picked back by index.

Three kinds of data are accepted, the same for the data to diagnose and the training data
the nearest neighbours come from:

* an :class:`~convlens.data.ImageDataset` (normalised as it batches itself);
* a pair ``(x, y)`` of a float tensor ``(N, C, H, W)`` of model inputs and int labels ``(N,)``;
* a re-iterable of ``(x, y)`` batches, e.g. a ``DataLoader`` (read twice: once for the pass,
  once to pick out the gallery's inputs), or of bare input batches for the training data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Any

import torch
from torch import Tensor

from convlens.errors import ConfigError, DataError, positive_int

#: One batch: model inputs and their labels (``None`` where the data has none).
Labelled = tuple[Tensor, Tensor | None]


def _is_dataset(data: object) -> bool:
    from convlens.data.dataset import ImageDataset

    return isinstance(data, ImageDataset)


class Source:
    """Labelled batches from one of the kinds of data above (``what`` names it in messages)."""

    def __init__(self, data: Any, what: str = "data", *, labels_required: bool = True) -> None:
        self.data = data
        self.what = what
        self.labels_required = labels_required
        self.classes: tuple[str, ...] | None = None
        self.black: Tensor | None = None  # the normalised black pixel per channel, if known
        if _is_dataset(data):
            self.kind = "dataset"
            self.classes = tuple(data.classes)
            self.black = (0.0 - torch.tensor(data.mean)) / torch.tensor(data.std)
        elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
            self.kind = "tensors"
            x, y = data
            if x.dim() != 4 or not x.is_floating_point():
                raise DataError(f"{what}: x must be a float tensor (N, C, H, W) of model inputs, got "
                                f"{x.dtype} of shape {tuple(x.shape)}; normalise uint8 images first")
            if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point() or y.dtype == torch.bool:
                raise DataError(f"{what}: y must be int labels of shape ({x.shape[0]},), got {y.dtype} of "
                                f"shape {tuple(y.shape)}")
        elif isinstance(data, Tensor):
            if labels_required:
                raise DataError(f"{what} is a bare tensor without labels; pass (x, y), an ImageDataset or "
                                "batches of (x, y)")
            if data.dim() != 4 or not data.is_floating_point():
                raise DataError(f"{what}: expected a float tensor (N, C, H, W) of model inputs, got "
                                f"{data.dtype} of shape {tuple(data.shape)}")
            self.kind = "tensors"
            self.data = (data, None)
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
            if iter(data) is data:
                raise ConfigError(f"{what} is a one-shot iterator; pass something that can be read twice: an "
                                  "ImageDataset, (x, y) tensors, a list of batches or a DataLoader")
            self.kind = "batches"
        else:
            raise ConfigError(f"cannot diagnose {type(data).__name__} as {what}: pass an ImageDataset, (x, y) "
                              "tensors or an iterable of (x, y) batches")

    def count(self) -> int | None:
        """How many inputs (``None`` if the data cannot say before it is read)."""
        if self.kind == "dataset":
            return len(self.data)
        if self.kind == "tensors":
            return int(self.data[0].shape[0])
        return len(self.data.dataset) if isinstance(getattr(self.data, "dataset", None), Sized) else None

    def batches(self, batch_size: int) -> Iterator[Labelled]:
        batch_size = positive_int("batch_size", batch_size)
        if self.kind == "dataset":
            yield from self.data.batches(batch_size)
            return
        if self.kind == "tensors":
            x, y = self.data
            for start in range(0, x.shape[0], batch_size):
                yield x[start:start + batch_size], None if y is None else y[start:start + batch_size]
            return
        for batch in self.data:
            yield self._split(batch)

    def _split(self, batch: object) -> Labelled:
        if isinstance(batch, Tensor):
            x, y = batch, None
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
            x = batch[0]
            y = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        else:
            raise DataError(f"a batch of {self.what} holds a {type(batch).__name__}; batches must be (x, y) "
                            "tensors")
        if y is None and self.labels_required:
            raise DataError(f"the batches of {self.what} carry no labels; yield (x, y) pairs")
        if x.dim() != 4 or not x.is_floating_point():
            raise DataError(f"a batch of {self.what} holds {x.dtype} inputs of shape {tuple(x.shape)}; batches "
                            "must be float (B, C, H, W) model inputs")
        return x, y

    def gather(self, indices: Sequence[int] | Tensor, batch_size: int = 256) -> Tensor:
        """The model inputs at ``indices`` (in that order), ``(len(indices), C, H, W)``."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if self.kind == "dataset":
            ds = self.data
            return ds.normalise(ds.images.index_select(0, idx.to(ds.images.device)))
        if self.kind == "tensors":
            x = self.data[0]
            return x.index_select(0, idx.to(x.device))
        if idx.numel() == 0:
            raise ConfigError("nothing to gather")
        want = torch.unique(idx)
        found: dict[int, Tensor] = {}
        offset = 0
        for x, _ in self.batches(batch_size):  # the second reading
            hits = want[(want >= offset) & (want < offset + x.shape[0])]
            for i in hits.tolist():
                found[i] = x[i - offset].detach().clone()
            offset += x.shape[0]
        missing = [i for i in idx.tolist() if i not in found]
        if missing:
            raise DataError(f"{self.what} held fewer inputs when read again (input {missing[0]} is missing); "
                            "pass data that yields the same batches every time it is read")
        return torch.stack([found[i] for i in idx.tolist()])
