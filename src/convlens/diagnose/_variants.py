"""The images of the background audit: foreground and background recombined, and colour changed.

With ``m`` the boolean foreground mask of an image (``True`` on the object), ``x`` its
uint8 pixels and ``fill`` the pixel value of an emptied area (0, black: the background of
MNIST and what the Backgrounds Challenge's "only-BG-B" uses)::

    original         x
    only-foreground  x where m, fill elsewhere
    only-background  fill where m, x elsewhere
    mixed-same       x_i where m_i, else background(j) = fill where m_j, x_j elsewhere,
                     j a partner of the same class
    mixed-rand       the same with j a partner drawn from the whole set

(Xiao et al., ICLR 2021, *Noise or Signal: The Role of Image Backgrounds in Object
Recognition*). Partners come from one ``numpy.random.default_rng(seed)``: for mixed-same a
random permutation within each class, shifted by one so that no image is its own partner
where the class has two or more images; for mixed-rand a random permutation of all images.

Colour variants, for 3-channel images only: ``grayscale`` (every channel the rounded mean
of the three) and ``swap-A-B`` (channels A and B exchanged: red-green, red-blue, green-blue).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

__all__ = ["BACKGROUND_VARIANTS", "CHANNEL_NAMES", "COLOUR_VARIANTS", "partners", "variant_batch"]

BACKGROUND_VARIANTS = ("original", "only-foreground", "only-background", "mixed-same", "mixed-rand")
CHANNEL_NAMES = ("red", "green", "blue")
_SWAPS = {f"swap-{CHANNEL_NAMES[a]}-{CHANNEL_NAMES[b]}": (a, b) for a, b in itertools.combinations(range(3), 2)}
COLOUR_VARIANTS = ("grayscale", *_SWAPS)


def partners(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """``{"mixed-same": j, "mixed-rand": j}``: the partner index of every image (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    same = np.arange(n)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        shuffled = members[rng.permutation(len(members))]
        same[shuffled] = np.roll(shuffled, 1)  # each to the next in a random cycle: never itself if 2+
    return {"mixed-same": same, "mixed-rand": rng.permutation(n)}


def _swap(x: torch.Tensor, a: int, b: int) -> torch.Tensor:
    order = list(range(x.shape[1]))
    order[a], order[b] = b, a
    return x[:, order]


def variant_batch(name: str, x: torch.Tensor, m: torch.Tensor, xj: torch.Tensor | None = None,
                  mj: torch.Tensor | None = None, *, fill: int = 0) -> torch.Tensor:
    """Variant ``name`` of uint8 images ``x`` ``(B, C, H, W)`` with masks ``m`` ``(B, H, W)``
    (bool); the mixed variants take the partners' images ``xj`` and masks ``mj``."""
    fg = m[:, None]  # (B, 1, H, W), broadcast over channels
    blank = torch.full_like(x, fill)
    if name == "original":
        return x
    if name == "only-foreground":
        return torch.where(fg, x, blank)
    if name == "only-background":
        return torch.where(fg, blank, x)
    if name in ("mixed-same", "mixed-rand"):
        if xj is None or mj is None:
            raise ValueError(f"variant {name} needs the partners' images and masks")
        background = torch.where(mj[:, None], blank, xj)
        return torch.where(fg, x, background)
    if name == "grayscale":
        gray = x.to(torch.float32).mean(dim=1, keepdim=True).round().to(torch.uint8)
        return gray.expand_as(x).contiguous()
    if name in _SWAPS:
        return _swap(x, *_SWAPS[name])
    raise ValueError(f"unknown variant {name!r}")
