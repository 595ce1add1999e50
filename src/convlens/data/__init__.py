"""Data: IDX files, dataset sources (download or an existing directory), in-memory
datasets batched as tensors, user images, and cheap augmentation.

>>> from convlens.data import load_dataset
>>> test = load_dataset("mnist", "test")  # from CONVLENS_DATA_DIR (or data_dir=...)
>>> x, label = test.item(test.index_of(7))  # the first '7'
>>> tuple(x.shape), label
((1, 1, 28, 28), 7)
"""

from __future__ import annotations

from convlens.data.dataset import ImageDataset, load_dataset, normalise
from convlens.data.idx import read_idx, read_idx_pair, write_idx
from convlens.data.images import load_image
from convlens.data.sources import SOURCES, Source, cache_dir, download, get_source, resolve_files
from convlens.data.stream import StreamingDataset
from convlens.data.transforms import random_shift

__all__ = [
    "SOURCES",
    "ImageDataset",
    "Source",
    "StreamingDataset",
    "cache_dir",
    "download",
    "get_source",
    "load_dataset",
    "load_image",
    "normalise",
    "random_shift",
    "read_idx",
    "read_idx_pair",
    "resolve_files",
    "write_idx",
]
