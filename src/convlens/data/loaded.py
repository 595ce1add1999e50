"""What the dataset sources give :func:`convlens.data.load_dataset`: the parts of an
in-memory dataset, which it makes an :class:`~convlens.data.ImageDataset` of (the sources
do not import the dataset module, which dispatches to them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Loaded"]


@dataclass
class Loaded:
    """uint8 ``images`` (N, C, H, W), int64 ``labels`` (N,) and what describes them, as the
    fields of :class:`~convlens.data.ImageDataset`."""

    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    classes: tuple[str, ...]
    name: str
    split: str
    source: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)

    def fields(self) -> dict[str, Any]:
        return dict(self.__dict__)
