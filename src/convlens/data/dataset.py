"""Datasets held in memory as uint8 tensors and batched without per-sample Python work.

>>> test = load_dataset("mnist", "test")  # from CONVLENS_DATA_DIR (or data_dir=...)
>>> for x, y in test.batches(64, shuffle=True, generator=torch.Generator().manual_seed(0)):
...     pass  # x: (64, 1, 28, 28) float32, normalised; y: (64,) int64
>>> len(test), tuple(x.shape), x.dtype, y.dtype  # the last batch holds the rest
(1500, (28, 1, 28, 28), torch.float32, torch.int64)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convlens.data.idx import read_idx, read_idx_pair
from convlens.data.sources import Source, get_source, locate
from convlens.data.split import SplitMixin, normalise
from convlens.errors import DataError, unknown_name

__all__ = ["SPLITS", "ImageDataset", "load_dataset", "normalise", "pixel_stats"]

SPLITS = ("train", "test")


@functools.lru_cache(maxsize=8)
def _stats_cached(path: str, size: int, mtime_ns: int) -> tuple[float, float]:
    del size, mtime_ns  # cache keys only: a changed file is read again
    return _stats(read_idx(path))


def _stats(images: np.ndarray) -> tuple[float, float]:
    # Exact mean and population std of pixels/255 from a 256-bin histogram: no float
    # copy of the whole dataset.
    counts = np.bincount(images.reshape(-1), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum()
    if total == 0:
        return 0.0, 1.0
    mean = float((counts * values).sum() / total)
    var = float((counts * (values - mean) ** 2).sum() / total)
    return mean, max(var, 0.0) ** 0.5 or 1.0


def pixel_stats(path: str | os.PathLike[str]) -> tuple[float, float]:
    """Mean and standard deviation of the pixels (scaled to [0, 1]) of an images IDX file."""
    st = Path(path).stat()
    return _stats_cached(str(path), st.st_size, st.st_mtime_ns)


@dataclass(eq=False)
class ImageDataset(SplitMixin):
    """Images and labels of one split, in memory.

    Attributes:
        images: uint8 tensor ``(N, C, H, W)``, pixel values 0..255.
        labels: int64 tensor ``(N,)``, indices into ``classes``.
        classes: class names, indexed by label.
        name: dataset name (``"mnist"``).
        split: ``"train"`` or ``"test"``.
        source: the file path or URL the images came from.
        mean, std: per-channel normalisation constants for pixels scaled to [0, 1].
        label_kind: what one label is called in messages ("digit", "class").
    """

    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    classes: tuple[str, ...]
    name: str
    split: str
    source: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    label_kind: str = "class"

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.dim() != 4:
            desc = (f"{self.images.dtype} of shape {tuple(self.images.shape)}"
                    if isinstance(self.images, torch.Tensor) else type(self.images).__name__)
            raise DataError(f"ImageDataset images must be a uint8 tensor N×C×H×W, got {desc}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            desc = (f"{self.labels.dtype} of shape {tuple(self.labels.shape)}"
                    if isinstance(self.labels, torch.Tensor) else type(self.labels).__name__)
            raise DataError(f"ImageDataset labels must be an int64 tensor of shape (N,), got {desc}")
        if len(self.images) != len(self.labels):
            raise DataError(f"ImageDataset has {len(self.images)} images but {len(self.labels)} labels")
        self.classes = tuple(str(c) for c in self.classes)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        c = self.images.shape[1]
        if len(self.mean) != c or len(self.std) != c:
            raise DataError(f"ImageDataset needs one mean and std per channel ({c}), got {self.mean} and {self.std}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        _, c, h, w = self.images.shape
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, {len(self)} images {c}×{h}×{w}, "
                f"{len(self.classes)} classes, source={self.source!r})")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)

    def _home(self) -> torch.device:
        return self.images.device

    def _rows(self, start: int, stop: int, order: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if order is None:  # views of the dataset
            return self.images[start:stop], self.labels[start:stop]
        idx = order[start:stop]
        return self.images.index_select(0, idx), self.labels.index_select(0, idx)

    def item(self, index: int) -> tuple[torch.Tensor, int]:
        """Example ``index`` as ``(x, label)``: x normalised float32 ``(1, C, H, W)``.

        Raises:
            DataError: ``index`` is not in ``0..len-1`` (the message gives the range).
        """
        i = self._check_index(index)
        return self.normalise(self.images[i:i + 1]), int(self.labels[i])

    def subset(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> ImageDataset:
        """A new dataset holding the examples at ``indices`` (in that order)."""
        idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
        if idx.dtype == torch.bool or idx.is_floating_point() or idx.dim() != 1:
            raise DataError(f"subset needs a 1-D sequence of integer indices, got {idx.dtype} of shape {tuple(idx.shape)}")
        idx = idx.to(torch.int64).to(self.images.device)
        n = len(self)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
            raise DataError(f"subset index {bad} is out of range for {self.name} {self.split}: valid indices are 0..{n - 1}")
        return ImageDataset(
            images=self.images.index_select(0, idx), labels=self.labels.index_select(0, idx),
            classes=self.classes, name=self.name, split=self.split, source=self.source,
            mean=self.mean, std=self.std, label_kind=self.label_kind,
        )


def load_dataset(
    name: str | Source = "mnist",
    split: str = "train",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    check: bool = True,
    **options: Any,
) -> ImageDataset:
    """Load one split of a dataset into memory.

    Files come from ``data_dir`` (no download), else ``CONVLENS_DATA_DIR``, else the
    download cache (see :mod:`convlens.data.sources`). Images become uint8
    ``(N, 1, H, W)`` (colour IDX files, 4-D, ``(N, C, H, W)``), labels int64. A directory
    written by ``convlens make-dataset`` is read as the dataset its manifest names
    (:mod:`convlens.data.manifest`). If the source has no published normalisation
    constants they are computed from its training images.

    With ``check`` (the default) the files must not clearly be another registered
    dataset (an official file's checksum, or their mean pixel; the rule is in
    :mod:`convlens.data.fingerprint`).

    ``name`` may also be a spec of :mod:`convlens.data.spec`: ``"cifar10"``,
    ``"cifar100"``, ``"folder:PATH"`` or ``"npz:PATH"``, with ``options`` (``size=``,
    ``channels=``, ``test=``, ``seed=``, ``mean=``, ``std=``, ``stream=``, ...). A folder
    larger than the memory budget comes back as a
    :class:`~convlens.data.stream.StreamingDataset`, which presents the same interface.

    Raises:
        DataError: unknown dataset or split, files missing, labels outside the
            class list, or the files are another dataset's. IDXError / DownloadError
            (both DataErrors) for corrupt files and failed downloads.
    """
    from convlens.data.spec import check_options, is_spec

    if is_spec(name):
        from convlens.data.loaded import Loaded
        from convlens.data.spec import load_spec

        got = load_spec(str(name), split, data_dir=data_dir, base_url=base_url, **options)
        return ImageDataset(**got.fields()) if isinstance(got, Loaded) else got  # else a StreamingDataset
    from convlens.data.manifest import manifest_source

    made = manifest_source(name, data_dir)  # a `make-dataset` directory names its own data
    check_options(made or name, options)
    src = made or get_source(name)
    if split not in SPLITS:
        raise DataError(unknown_name("split", split, SPLITS))
    loc = locate(src, data_dir, base_url=base_url)
    images_path, labels_path = loc.paths[f"{split}_images"], loc.paths[f"{split}_labels"]
    images, labels = read_idx_pair(images_path, labels_path)
    if check:
        from convlens.data.fingerprint import check_named

        check_named(src, images, images_path, split)
    if labels.size and int(labels.max()) >= len(src.classes):
        raise DataError(
            f"labels file {labels_path} has label {int(labels.max())} but {src.title} has "
            f"{len(src.classes)} classes (0..{len(src.classes) - 1}); is it the right dataset?"
        )
    if src.mean is not None and src.std is not None:
        mean, std = src.mean, src.std
    else:
        m, s = _stats(images) if split == "train" else pixel_stats(loc.paths["train_images"])
        c = 1 if images.ndim == 3 else images.shape[1]
        mean, std = (m,) * c, (s,) * c
    return ImageDataset(
        images=torch.from_numpy(images).unsqueeze(1) if images.ndim == 3 else torch.from_numpy(images),  # N×C×H×W
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=src.classes,
        name=src.name,
        split=split,
        source=loc.origins[f"{split}_images"],
        mean=mean,
        std=std,
        label_kind=src.label_kind,
    )
