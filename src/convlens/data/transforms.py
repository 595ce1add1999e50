"""Cheap, batched augmentation on tensors (no per-sample Python loop)."""

from __future__ import annotations

import operator

import torch

from convlens.errors import ConfigError

__all__ = ["fit_images", "random_shift"]


def fit_images(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 images ``x`` (N×C×H×W) fitted to ``shape`` (C', H', W') for a model that reads
    other inputs than the data holds: gray becomes RGB by repeating it, RGB becomes gray
    as the mean of its channels, and the size changes by bilinear interpolation
    (antialiased when shrinking). Returns ``x`` itself when it already fits.

    >>> fit_images(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), (3, 32, 32)).shape
    torch.Size([2, 3, 32, 32])
    """
    c, h, w = shape
    if x.dim() != 4 or x.dtype != torch.uint8:
        raise ConfigError(f"fit_images expects uint8 images N×C×H×W, got {x.dtype} of shape {tuple(x.shape)}")
    if tuple(x.shape[1:]) == (c, h, w):
        return x
    if x.shape[1] != c and 1 not in (x.shape[1], c):
        raise ConfigError(f"cannot fit {x.shape[1]}-channel images to a model that reads {c} channels; "
                          "give images with 1 or the model's number of channels")
    y = x.to(torch.float32)
    if x.shape[1] != c:
        y = y.mean(dim=1, keepdim=True) if c == 1 else y.expand(-1, c, -1, -1)
    if (h, w) != tuple(x.shape[2:]):
        y = torch.nn.functional.interpolate(y, size=(h, w), mode="bilinear", align_corners=False,
                                            antialias=h < x.shape[2] or w < x.shape[3])
    return y.round_().clamp_(0, 255).to(torch.uint8).contiguous()


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image of a batch by its own random whole-pixel offset, zero fill.

    Every image ``n`` of ``x`` (``N×C×H×W``, any dtype, any device) gets a vertical
    offset ``dy[n]`` and a horizontal offset ``dx[n]`` drawn uniformly from
    ``-max_shift..max_shift`` (inclusive); positive moves the content down / right.
    Pixels shifted in from outside are 0 (black, the MNIST background, when applied
    to uint8 pixels before normalisation). The offsets are one ``(N, 2)``
    ``torch.randint`` draw from ``generator`` (a CPU generator, or the global one
    when None), so the same generator state gives the same result on every device.
    Returns a new tensor; ``x`` is not modified.

    Implementation: zero-pad by ``max_shift`` on every side, then two ``gather`` calls
    pick rows and columns of the padded images at per-image offsets.

    >>> g = torch.Generator().manual_seed(0)
    >>> random_shift(torch.ones(4, 1, 5, 5), 2, g).shape
    torch.Size([4, 1, 5, 5])
    """
    try:
        m = operator.index(max_shift)
    except TypeError:
        raise ConfigError(f"max_shift must be a whole number of pixels, got {max_shift!r}") from None
    if m < 0:
        raise ConfigError(f"max_shift must be >= 0, got {m}")
    if x.dim() != 4:
        raise ConfigError(f"random_shift expects an N×C×H×W batch, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    # Nothing to shift: no offsets are drawn and the generator does not advance.
    if m == 0 or n == 0:
        return x.clone()
    shifts = torch.randint(-m, m + 1, (n, 2), generator=generator).to(x.device)  # (N, 2): dy, dx
    padded = torch.zeros((n, c, h + 2 * m, w + 2 * m), dtype=x.dtype, device=x.device)
    padded[:, :, m:m + h, m:m + w] = x
    # out[n, :, i, j] = x[n, :, i - dy, j - dx] = padded[n, :, i - dy + m, j - dx + m]
    rows = torch.arange(h, device=x.device).unsqueeze(0) + (m - shifts[:, :1])  # (N, H)
    cols = torch.arange(w, device=x.device).unsqueeze(0) + (m - shifts[:, 1:])  # (N, W)
    out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * m))  # (N, C, H, W+2m)
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))  # (N, C, H, W)
