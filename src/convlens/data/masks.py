"""Foreground masks of images on a dark background (MNIST and what is made from it).

A pixel is foreground when its brightness, the largest of its channels on the 0..255
scale, exceeds ``threshold`` (default :data:`THRESHOLD` = 32, an eighth of full scale:
the faint anti-aliased rim of an MNIST stroke is in, the black paper is out); the mask
is then dilated by ``dilation`` pixels (default :data:`DILATION` = 2: a pixel joins the
foreground when any pixel within a ``(2·dilation+1)²`` square around it is foreground),
so the object's immediate outline counts as object, not as background.

>>> import numpy as np
>>> img = np.zeros((1, 1, 7, 7), np.uint8); img[0, 0, 3, 3] = 200
>>> foreground_masks(img, dilation=1)[0].astype(int).sum()  # the pixel and its 8 neighbours
np.int64(9)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from convlens.errors import DataError

__all__ = ["DILATION", "THRESHOLD", "foreground_masks"]

THRESHOLD = 32
DILATION = 2


def foreground_masks(images: Any, *, threshold: int = THRESHOLD, dilation: int = DILATION) -> np.ndarray:
    """Boolean ``(N, H, W)`` foreground masks of uint8 ``images`` (``N×C×H×W`` or ``N×H×W``,
    NumPy or torch) on a dark background: brightness above ``threshold``, dilated by
    ``dilation`` pixels (see the module docstring)."""
    a = images.detach().cpu() if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if a.dtype != torch.uint8 or a.dim() not in (3, 4):
        raise DataError(f"foreground masks need uint8 images N×C×H×W or N×H×W, got {a.dtype} of shape {tuple(a.shape)}")
    if dilation < 0:
        raise DataError(f"dilation must be >= 0 pixels, got {dilation}")
    bright = (a.amax(dim=1) if a.dim() == 4 else a) > threshold  # (N, H, W)
    if dilation and bright.numel():
        k = 2 * dilation + 1
        bright = torch.nn.functional.max_pool2d(bright[:, None].to(torch.float32), k, stride=1, padding=dilation)[:, 0] > 0
    return bright.numpy()
