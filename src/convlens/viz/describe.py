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
