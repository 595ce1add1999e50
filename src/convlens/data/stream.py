"""A dataset read from disk batch by batch: an image folder larger than memory.

:class:`StreamingDataset` presents what :class:`~convlens.data.ImageDataset` does
(``len``, ``shape``, ``classes``, ``mean``/``std``, ``labels``, ``batches``, ``item``,
``subset``, ``normalise``, ``index_of``, and ``images`` as a lazy view), so the dataset
passes, the top-k search, faithfulness and the CAM views take it unchanged. It holds its
folder's :class:`~convlens.data.folder.FolderIndex` (paths, labels, pixel sums; no
pixels) and the positions of its images in it, so it pickles small and
``subset(range(a, b))`` names a shard of it. Peak memory is one batch of decoded images,
whatever the size of the folder.

>>> ds = load_dataset("folder:photos", "train", stream=True)       # doctest: +SKIP
>>> for x, y in ds.batches(256):                                  # doctest: +SKIP
...     pass  # x: (256, C, H, W) float32 normalised, decoded for this batch only
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, SupportsIndex

import numpy as np
import torch

from convlens.data.folder import (
    FolderIndex,
    _per_channel,
    budget_bytes,
    decode,
    index_folder,
    split_positions,
)
from convlens.data.split import SplitMixin
from convlens.errors import ConfigError, DataError

__all__ = ["LazyImages", "StreamingDataset", "load_folder"]


class LazyImages:
    """The images of a :class:`StreamingDataset` as a read-only, lazily decoded uint8
    ``(N, C, H, W)`` "tensor": indexing (an int, a slice, a list or tensor of ints) or
    ``index_select(0, idx)`` decodes only the images asked for."""

    dtype = torch.uint8
    device = torch.device("cpu")

    def __init__(self, data: StreamingDataset) -> None:
        self._data = data

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self._data), *self._data.shape))

    def __len__(self) -> int:
        return len(self._data)

    def dim(self) -> int:
        return 4

    def __getitem__(self, key: Any) -> torch.Tensor:
        n = len(self._data)
        if isinstance(key, SupportsIndex) and not isinstance(key, (torch.Tensor, np.ndarray)):
            return self._data._decode([self._data._check_index(key)])[0]
        if isinstance(key, slice):
            return self._data._decode(range(n)[key])
        idx = torch.as_tensor(np.asarray(key) if not isinstance(key, torch.Tensor) else key)
        if idx.dim() == 0:
            return self._data._decode([self._data._check_index(int(idx))])[0]
        return self.index_select(0, idx)

    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        if dim != 0:
            raise DataError("a streamed dataset's images can only be selected along dimension 0 (the images)")
        idx = index.to(torch.int64).cpu().numpy()
        n = len(self._data)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise DataError(f"image index {int(idx.max()) if idx.max() >= n else int(idx.min())} is out of range "
                            f"for {self._data.name} {self._data.split}: valid indices are 0..{n - 1}")
        return self._data._decode(idx % max(n, 1))

    def fingerprint(self, labels: Any = None) -> Any:
        """The dataset's :class:`~convlens.data.fingerprint.Fingerprint`, from the index (no
        image is decoded); its ``sha256`` covers the per-image pixel digests and the labels."""
        return self._data.fingerprint()


@dataclass(eq=False)
class StreamingDataset(SplitMixin):
    """Images of one split of an image folder, decoded batch by batch (see the module
    docstring). ``positions`` index ``index``; the other fields are as in
    :class:`~convlens.data.ImageDataset`."""

    index: FolderIndex = field(repr=False)
    positions: np.ndarray = field(repr=False)
    name: str
    split: str
    source: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    label_kind: str = "class"
    workers: int | None = None

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.int64)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        c = self.index.channels
        if len(self.mean) != c or len(self.std) != c:
            raise DataError(f"StreamingDataset needs one mean and std per channel ({c}), got {self.mean} and {self.std}")

    # --- what ImageDataset has -----------------------------------------------------------------

    @property
    def classes(self) -> tuple[str, ...]:
        return self.index.classes

    @property
    def images(self) -> LazyImages:
        """The images as a lazy uint8 ``(N, C, H, W)`` view (decoded when indexed)."""
        return LazyImages(self)

    @property
    def labels(self) -> torch.Tensor:
        """int64 ``(N,)`` (from the index; no image is decoded)."""
        return torch.from_numpy(self.index.labels[self.positions].copy())

    def __len__(self) -> int:
        return len(self.positions)

    def __repr__(self) -> str:
        c, h, w = self.shape
        return (f"StreamingDataset(name={self.name!r}, split={self.split!r}, {len(self)} images {c}×{h}×{w}, "
                f"{len(self.classes)} classes, source={self.source!r})")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        h, w = self.index.size
        return self.index.channels, h, w

    def _decode(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        return torch.from_numpy(decode(self.index, self.positions[np.asarray(rows, dtype=np.int64)],
                                       workers=self.workers))

    def _home(self) -> torch.device:
        return torch.device("cpu")

    def _rows(self, start: int, stop: int, order: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.arange(start, stop) if order is None else order[start:stop].numpy()
        return self._decode(rows), torch.from_numpy(self.index.labels[self.positions[rows]])

    def item(self, index: int) -> tuple[torch.Tensor, int]:
        """Example ``index`` as ``(x, label)``: x normalised float32 ``(1, C, H, W)``."""
        i = self._check_index(index)
        return self.normalise(self._decode([i])), int(self.index.labels[self.positions[i]])

    def subset(self, indices: Sequence[int] | torch.Tensor | np.ndarray | range) -> StreamingDataset:
        """A streamed dataset of the examples at ``indices`` (in that order); nothing is decoded."""
        idx = np.asarray(indices.cpu().numpy() if isinstance(indices, torch.Tensor) else indices)
        if idx.dtype == bool or not np.issubdtype(idx.dtype if idx.size else np.dtype(np.int64), np.integer) \
                or idx.ndim != 1:
            raise DataError(f"subset needs a 1-D sequence of integer indices, got {idx.dtype} of shape {idx.shape}")
        idx = idx.astype(np.int64)
        n = len(self)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
            bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
            raise DataError(f"subset index {bad} is out of range for {self.name} {self.split}: valid indices are 0..{n - 1}")
        return dataclasses.replace(self, positions=self.positions[idx])

    # --- streamed extras ----------------------------------------------------------------------

    def pixel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Exact per-channel mean and std of these images (from the index)."""
        return self.index.stats(self.positions)

    def fingerprint(self) -> Any:
        """The :class:`~convlens.data.fingerprint.Fingerprint` of these images, from the index."""
        from convlens.data.fingerprint import Fingerprint

        c, h, w = self.shape
        total = max(len(self) * c * h * w, 1)
        mean = float(self.index.sums[self.positions].sum()) / total / 255.0
        zero = float(self.index.zeros[self.positions].sum()) / total
        digest = hashlib.sha256(b"convlens-stream-v1")
        digest.update(np.ascontiguousarray(self.index.digests[self.positions]).tobytes())
        digest.update(np.ascontiguousarray(self.index.labels[self.positions]).tobytes())
        return Fingerprint(len(self), (c, h, w), mean, zero, digest.hexdigest())


def load_folder(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    name: str | None = None,
    size: tuple[int, int] | None = None,
    channels: int | None = None,
    test: float = 0.2,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    stream: bool | None = None,
    memory_budget: int | str | None = None,
    progress: bool | None = None,
) -> Any:
    """One split of an image folder: the parts of an in-memory dataset
    (:class:`~convlens.data.loaded.Loaded`, which :func:`convlens.data.load_dataset` makes
    an :class:`~convlens.data.ImageDataset` of), or
    a :class:`~convlens.data.stream.StreamingDataset` when its pixels would take more than
    ``memory_budget`` bytes (or with ``stream=True``). ``mean``/``std`` default to the
    training split's, computed exactly from the index. ``name`` is what the dataset is
    called (a run records it to load the same data again; default ``folder:ROOT``)."""
    from convlens.data.loaded import Loaded

    index = index_folder(root, channels=channels, size=size, progress=progress)
    positions = split_positions(index, split, test, seed)
    if mean is None or std is None:
        if mean is not None or std is not None:
            raise ConfigError("give mean and std together, or neither (they are then computed)")
        m, s = index.stats(split_positions(index, "train", test, seed))
    else:
        m, s = _per_channel("mean", mean, index.channels), _per_channel("std", std, index.channels)
    label = name or f"folder:{index.root}"
    c, (h, w) = index.channels, index.size
    nbytes = len(positions) * c * h * w
    if stream is None:
        stream = nbytes > budget_bytes(memory_budget)
    if stream:
        return StreamingDataset(index=index, positions=positions, name=label, split=split, source=str(index.root),
                                mean=m, std=s)
    images = decode(index, positions)
    return Loaded(images=torch.from_numpy(images), labels=torch.from_numpy(index.labels[positions].copy()),
                  classes=index.classes, name=label, split=split, source=str(index.root), mean=m, std=s)
