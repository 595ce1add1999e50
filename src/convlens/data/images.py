"""Load a user's own picture (PNG, JPEG, ...) as a model input.

MNIST-like datasets show light strokes on a black background. A photo or scan of a
digit written on paper is the opposite: dark ink on a bright page. With
``invert="auto"`` :func:`load_image` compares the mean brightness of the image's
border (the outer tenth on each side) with that of its centre (the middle half in
each direction) and inverts the image when the border is brighter, so a digit on
paper comes out as a bright digit on black. ``invert=True`` or ``False`` forces it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from convlens.errors import ConfigError, ImageError

__all__ = ["MAX_IMAGE_PIXELS", "border_is_brighter", "load_image"]

#: The largest image :func:`load_image` reads, in pixels (width × height): Pillow's own
#: decompression-bomb limit (about 89 megapixels, e.g. 9459×9459). Larger files are
#: refused before their pixel data is decoded.
MAX_IMAGE_PIXELS = 89_478_485


def border_is_brighter(gray: np.ndarray) -> bool:
    """Whether the border (outer tenth per side, at least 1 px) of a 2-D image is
    brighter on average than its centre (the middle half in each direction)."""
    h, w = gray.shape
    if h < 3 or w < 3:
        return False
    b = max(1, min(h, w) // 10)
    g = gray.astype(np.float64)
    border = np.concatenate([g[:b].ravel(), g[-b:].ravel(), g[b:-b, :b].ravel(), g[b:-b, -b:].ravel()])
    centre = g[h // 4: h - h // 4, w // 4: w - w // 4]
    return bool(border.mean() > centre.mean())


def _check_pixels(path: Path, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"image file {path} is {width}×{height} pixels ({width * height:,}), more than the "
            f"{MAX_IMAGE_PIXELS:,} convlens reads; scale it down (e.g. to 280×280) and pass the smaller file"
        )


def load_image(
    path: str | os.PathLike[str],
    *,
    size: tuple[int, int] = (28, 28),
    channels: int = 1,
    invert: bool | Literal["auto"] = "auto",
) -> torch.Tensor:
    """Read an image file into a uint8 tensor ``(1, channels, H, W)`` with ``(H, W) = size``.

    The image is converted to grayscale (``channels=1``) or RGB (``channels=3``);
    transparency is composited onto white. It is inverted according to ``invert``
    (see the module docstring), then scaled to fit inside ``size`` keeping its aspect
    ratio and centred, the remaining margin filled with the mean colour of the
    (possibly inverted) image's border.

    Raises:
        ImageError: the file is missing, not a file, or not an image Pillow can read;
            the message names the file.
        ConfigError: ``size``, ``channels`` or ``invert`` is not valid.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if (len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size)):
        raise ConfigError(f"size must be (height, width) in whole pixels >= 1, got {size!r}")
    if invert not in (True, False, "auto"):
        raise ConfigError(f"invert must be True, False or 'auto', got {invert!r}")
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image file {p} does not exist; check the path")
    if not p.is_file():
        raise ImageError(f"image path {p} is not a file")
    try:
        with warnings.catch_warnings():  # Pillow warns above its limit; convlens refuses there itself
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(p)
        with opened:
            _check_pixels(p, *opened.size)
            opened.load()
            img = ImageOps.exif_transpose(opened) or opened
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
            img = img.convert("L" if channels == 1 else "RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError:  # Pillow's guard, from a header it read before convlens could
        raise ImageError(
            f"image file {p} is larger than the {MAX_IMAGE_PIXELS:,} pixels convlens reads; "
            "scale it down (e.g. to 280×280) and pass the smaller file"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{p} is not an image file Pillow can read (PNG, JPEG, BMP, ...)") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise ImageError(f"image file {p} is corrupt or unreadable: {exc}") from None

    gray = np.asarray(img.convert("L") if channels == 3 else img)
    if invert is True or (invert == "auto" and border_is_brighter(gray)):
        img = ImageOps.invert(img)

    arr = np.asarray(img)
    b = max(1, min(arr.shape[0], arr.shape[1]) // 10)
    edge = np.concatenate([arr[:b].reshape(-1, channels), arr[-b:].reshape(-1, channels),
                           arr[:, :b].reshape(-1, channels), arr[:, -b:].reshape(-1, channels)])
    fill = tuple(int(np.rint(v)) for v in edge.mean(axis=0))

    out_h, out_w = size
    scale = min(out_h / img.height, out_w / img.width)
    new_w = max(1, min(out_w, round(img.width * scale)))
    new_h = max(1, min(out_h, round(img.height * scale)))
    resized = img.resize((new_w, new_h), Image.Resampling.LANCZOS)
    canvas = Image.new(img.mode, (out_w, out_h), fill[0] if channels == 1 else fill)
    canvas.paste(resized, ((out_w - new_w) // 2, (out_h - new_h) // 2))

    t = torch.from_numpy(np.array(canvas, dtype=np.uint8))
    t = t.unsqueeze(0) if channels == 1 else t.permute(2, 0, 1)  # (C, H, W)
    return t.unsqueeze(0).contiguous()  # (1, C, H, W)
