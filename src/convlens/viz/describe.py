"""Words from numbers: the pieces captions and alt texts are made of."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fmt(x: float) -> str:
    """A number with three significant digits, no scientific notation for usual sizes."""
    if x == 0:
        return "0"
    ax = abs(x)
    if 1e-3 <= ax < 1e4:
        return f"{x:.3g}"
    return f"{x:.2e}"


def listing(items: Sequence[str]) -> str:
    items = list(items)
    if not items:
        return "none"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def orientation(kernel: np.ndarray) -> str:
    """Describe what a 2-D kernel looks for: an oriented edge, a blob or no clear pattern.

    Uses the structure tensor of the kernel's own gradient: a strong, coherent gradient
    direction means an edge detector (the edge runs across the gradient).
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or min(k.shape) < 2 or not np.any(k):
        return "no clear pattern"
    gy, gx = np.gradient(k)
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    trace = jxx + jyy
    if trace == 0:
        return "uniform"
    coherence = np.hypot(jxx - jyy, 2 * jxy) / trace
    mean_part = abs(float(k.mean())) * k.size / (np.abs(k).sum() + 1e-12)
    if coherence < 0.35:
        return "blob or spot" if mean_part > 0.5 else "no single orientation"
    # angle of the dominant gradient direction, in image coordinates (y down)
    theta = 0.5 * np.degrees(np.arctan2(2 * jxy, jxx - jyy))  # 0: gradient along x
    theta = (theta + 180) % 180
    if theta < 22.5 or theta >= 157.5:
        return "vertical edge"
    if 67.5 <= theta < 112.5:
        return "horizontal edge"
    # gradient pointing down-right (y down) means an edge running up-right: "/"
    return "diagonal edge (/)" if theta < 67.5 else "diagonal edge (\\)"


def top_indices(values: np.ndarray, k: int = 3) -> list[int]:
    """Indices of the ``k`` largest values, largest first (stable for ties)."""
    order = np.argsort(-np.asarray(values), kind="stable")
    return [int(i) for i in order[:k]]


#: Hue names by their centre angle on the HSV colour wheel, in degrees.
_HUES = ((0, "red"), (30, "orange"), (60, "yellow"), (120, "green"), (180, "cyan"), (240, "blue"),
         (280, "purple"), (320, "magenta"), (360, "red"))


def colour_name(rgb: Sequence[float]) -> str:
    """The everyday name of a colour ``(r, g, b)`` in [0, 1]: a hue (``"red"``, ``"green"``,
    ``"blue"``, ...), prefixed ``"dark "``/``"light "``, or a gray (``"black"``, ``"gray"``,
    ``"white"``) when it is nearly colourless.

    >>> colour_name((0.9, 0.1, 0.1)), colour_name((0.5, 0.5, 0.52)), colour_name((0.1, 0.1, 0.5))
    ('red', 'gray', 'dark blue')
    """
    import colorsys

    r, g, b = (min(max(float(v), 0.0), 1.0) for v in rgb)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if s < 0.2 or v < 0.12:
        return "black" if v < 0.2 else "white" if v > 0.85 and s < 0.2 else "gray"
    deg = h * 360.0
    hue = min(_HUES, key=lambda item: abs(item[0] - deg))[1]
    return f"dark {hue}" if v < 0.55 else f"light {hue}" if s < 0.45 else hue


def mean_colour(image: np.ndarray) -> str:
    """The name of the mean colour of an RGB image ``(3, H, W)`` with values in [0, 1]."""
    return colour_name(np.asarray(image, dtype=np.float64).reshape(3, -1).mean(axis=1))


def filter_colour(weight: np.ndarray) -> str:
    """What colour an RGB filter ``(3, kh, kw)`` responds to most: the colour of its summed
    weight per channel, drawn as in the filter figure (0.5 + w / 2·max|w|), e.g. ``"red"``
    for a filter with positive red and negative green and blue weights; ``"no colour"`` when
    its channels' sums are nearly equal (it sees brightness, not colour)."""
    v = np.asarray(weight, dtype=np.float64).reshape(3, -1).sum(axis=1)
    m = float(np.abs(v).max())
    if m == 0 or float(v.max() - v.min()) < 0.2 * m:
        return "no colour (its channels weigh alike: brightness)"
    return colour_name(0.5 + v / (2 * m))
