"""What kind of filter is it? First-layer filters classified by fitting models to them.

"Did conv1 learn edge detectors?" gets a measured answer: each filter's dominant spatial
pattern is fitted (least squares, :func:`scipy.optimize.least_squares`) by

* a **Gabor** function (an oriented, windowed sinusoid; Daugman 1985)::

      g(x, y) = A exp(-u²/2σu² - v²/2σv²) cos(2π f u + φ) + c
      u = (x - x0) cos θ + (y - y0) sin θ,   v = -(x - x0) sin θ + (y - y0) cos θ

* an isotropic **difference of Gaussians** (a blob, or a centre-surround cell)::

      d(x, y) = A exp(-r²/2σ1²) - B exp(-r²/2σ2²) + c,   r² = (x - x0)² + (y - y0)²

and labelled by the better fit, judged by the adjusted R² (which charges the Gabor its two
extra parameters):

* ``"edge"`` (odd-symmetric Gabor, |sin φ| ≥ |cos φ|) or ``"bar"`` (even-symmetric), both
  *oriented*, with ``angle``: the direction of the edge or bar in degrees, 0 horizontal,
  counter-clockwise, in [0, 180) (x to the right, y up);
* ``"blob"``: the difference of Gaussians fits at least as well (``centre_surround``
  when its surround is clearly negative);
* ``"colour"``: with 3 input channels, most of the filter's energy is colour-opponent
  (its deviation from the channels' mean, i.e. not luminance);
* ``"noise"``: neither model explains the filter (adjusted R² below ``min_r2``).

With several input channels the spatial pattern is the filter's first singular vector
over channels (the pattern all channels share, weighted); with 3 channels, luminance.

>>> import numpy as np
>>> y, x = np.mgrid[-3:4, -3:4]
>>> edge = np.tanh(x / 1.0) * np.exp(-(x**2 + y**2) / 8)   # a vertical edge
>>> k = classify_filters(edge[None, None])[0]
>>> k.kind, round(k.angle) % 180
('edge', 90)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from convlens.errors import ConfigError

__all__ = ["KINDS", "FilterKind", "FilterKinds", "Kind", "classify_filters"]

Kind = Literal["edge", "bar", "blob", "colour", "noise"]
KINDS: tuple[Kind, ...] = ("edge", "bar", "blob", "colour", "noise")
#: How each kind is said in sentences.
WORDS = {"edge": "oriented edge detectors", "bar": "oriented bar detectors", "blob": "blob or centre-surround",
         "colour": "colour-opponent", "noise": "noise-like"}


@dataclass(frozen=True)
class FilterKind:
    """One filter's label. ``r2``: adjusted R² of the chosen model (for ``colour``, the
    colour-opponent share of the energy; for ``noise``, the better of the two fits)."""

    kind: Kind
    r2: float
    angle: float | None = None
    r2_gabor: float = 0.0
    r2_blob: float = 0.0
    centre_surround: bool = False
    params: dict[str, float] = field(default_factory=dict)

    @property
    def oriented(self) -> bool:
        return self.kind in ("edge", "bar")


@dataclass
class FilterKinds(Sequence[FilterKind]):
    """The labels of a layer's filters, in filter order, with their counts and a sentence."""

    layer: str
    kinds: list[FilterKind]

    def __getitem__(self, i: int) -> FilterKind:  # type: ignore[override]  # ints only
        return self.kinds[i]

    def __len__(self) -> int:
        return len(self.kinds)

    def counts(self) -> dict[str, int]:
        """Filters per kind, every kind listed (zeros included), in :data:`KINDS` order."""
        c = Counter(k.kind for k in self.kinds)
        return {kind: c.get(kind, 0) for kind in KINDS}

    @property
    def n_oriented(self) -> int:
        return sum(k.oriented for k in self.kinds)

    def summary(self) -> str:
        """E.g. "11 of 16 conv1 filters are oriented edge or bar detectors (mean fit R² 0.83);
        3 blob or centre-surround, 2 noise-like"."""
        n = len(self.kinds)
        oriented = [k for k in self.kinds if k.oriented]
        head = (f"{len(oriented)} of {n} {self.layer} filters are oriented edge or bar detectors"
                + (f" (mean fit R² {np.mean([k.r2 for k in oriented]):.2f})" if oriented else ""))
        rest = [f"{c} {WORDS[kind]}" for kind, c in self.counts().items() if c and kind not in ("edge", "bar")]
        return head + ("; " + ", ".join(rest) if rest else "")

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "counts": self.counts(), "summary": self.summary(),
                "filters": [{"kind": k.kind, "r2": k.r2, "angle": k.angle, "r2_gabor": k.r2_gabor,
                             "r2_blob": k.r2_blob, "centre_surround": k.centre_surround} for k in self.kinds]}


def _grid(h: int, w: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Pixel coordinates, centre at 0: x to the right, y up (rows go down)."""
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    return cols - (w - 1) / 2, (h - 1) / 2 - rows


def _gabor(p: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    a, x0, y0, theta, su, sv, f, phi, c = p
    dx, dy = x - x0, y - y0
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    return np.asarray(a * np.exp(-u**2 / (2 * su**2) - v**2 / (2 * sv**2)) * np.cos(2 * math.pi * f * u + phi) + c)


def _dog(p: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    a, b, s1, s2, x0, y0, c = p
    r2 = (x - x0) ** 2 + (y - y0) ** 2
    return np.asarray(a * np.exp(-r2 / (2 * s1**2)) - b * np.exp(-r2 / (2 * s2**2)) + c)


def _adjusted(resid: NDArray[np.float64], f: NDArray[np.float64], n_params: int) -> float:
    total = float(((f - f.mean()) ** 2).sum())
    if total <= 0:
        return 0.0
    r2 = 1.0 - float((resid**2).sum()) / total
    dof = f.size - n_params - 1
    return r2 if dof <= 0 else 1.0 - (1.0 - r2) * (f.size - 1) / dof


def _fit(model: Any, starts: list[NDArray[np.float64]], lo: NDArray[np.float64], hi: NDArray[np.float64],
         f: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.float64],
         max_nfev: int = 40) -> tuple[NDArray[np.float64], float]:
    from scipy.optimize import least_squares

    best_p, best_cost = starts[0], math.inf
    for p0 in starts:
        p0 = np.clip(p0, lo + 1e-9, hi - 1e-9)
        res = least_squares(lambda p: (model(p, x, y) - f).ravel(), p0, bounds=(lo, hi), max_nfev=max_nfev, x_scale="jac")
        if res.cost < best_cost:
            best_p, best_cost = res.x, float(res.cost)
    return best_p, best_cost


def _fit_gabor(f: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
    h, w = f.shape
    size = max(h, w)
    amp = float(np.abs(f).max()) or 1.0
    # the dominant frequency and direction from the zero-padded spectrum start the fit
    n = 4 * size
    spec = np.abs(np.fft.fft2(f - f.mean(), s=(n, n)))
    spec[0, 0] = 0
    i, j = np.unravel_index(int(np.argmax(spec)), spec.shape)
    fy, fx = np.fft.fftfreq(n)[i], np.fft.fftfreq(n)[j]
    # spectrum axes: rows (down) and columns (right); y points up
    freq = float(np.hypot(fx, fy))
    theta0 = math.atan2(-fy, fx)
    lo = np.array([-4 * amp, x.min(), y.min(), -2 * math.pi, 0.5, 0.5, 0.0, -2 * math.pi, -amp])
    hi = np.array([4 * amp, x.max(), y.max(), 2 * math.pi, 2.0 * size, 2.0 * size, 0.5, 2 * math.pi, amp])
    starts = [np.array([amp, 0, 0, theta0, size / 4, size / 3, max(freq, 0.02), phi, 0.0])
              for phi in (0.0, math.pi / 2)]
    starts.append(np.array([amp, 0, 0, theta0, size / 2, size / 2, 0.05, math.pi / 2, 0.0]))
    return _fit(_gabor, starts, lo, hi, f, x, y)


def _fit_dog(f: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
    h, w = f.shape
    size = max(h, w)
    amp = float(np.abs(f).max()) or 1.0
    peak = np.unravel_index(int(np.argmax(np.abs(f))), f.shape)
    px, py = float(x[peak]), float(y[peak])
    sign = 1.0 if f[peak] >= 0 else -1.0
    lo = np.array([-4 * amp, -4 * amp, 0.3, 0.3, x.min(), y.min(), -amp])
    hi = np.array([4 * amp, 4 * amp, 2.0 * size, 4.0 * size, x.max(), y.max(), amp])
    starts = [np.array([sign * amp, 0.0, size / 5, size / 2.5, px, py, 0.0]),
              np.array([sign * amp * 1.5, sign * amp * 0.5, size / 6, size / 2.5, 0.0, 0.0, 0.0])]
    return _fit(_dog, starts, lo, hi, f, x, y)


def _spatial(w: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
    """The filter's shared spatial pattern (kh, kw) and, with 3 channels, the share of its
    energy that is colour-opponent (0 otherwise)."""
    c = w.shape[0]
    if c == 1:
        return w[0], 0.0
    if c == 3:
        lum = w.mean(axis=0)
        total = float((w**2).sum())
        chroma = float(((w - lum) ** 2).sum()) / total if total > 0 else 0.0
        return lum, chroma
    u, s, vt = np.linalg.svd(w.reshape(c, -1), full_matrices=False)
    return (vt[0] * s[0] * np.sign(u[:, 0].sum() or 1.0)).reshape(w.shape[1:]), 0.0


def classify_filter(w: NDArray[np.float64], *, min_r2: float = 0.5, colour_share: float = 0.5,
                    blob_margin: float = 0.02) -> FilterKind:
    """The kind of one filter ``w`` (C, kh, kw) (see the module docs)."""
    w = np.asarray(w, dtype=np.float64)
    pattern, chroma = _spatial(w)
    if chroma > colour_share:
        return FilterKind("colour", chroma)
    x, y = _grid(*pattern.shape)
    scale = float(np.abs(pattern).max())
    if scale == 0 or pattern.size < 9:
        return FilterKind("noise", 0.0)
    f = pattern / scale
    pg, _ = _fit_gabor(f, x, y)
    pd, _ = _fit_dog(f, x, y)
    r2g = _adjusted(_gabor(pg, x, y) - f, f, 9)
    r2d = _adjusted(_dog(pd, x, y) - f, f, 7)
    best = max(r2g, r2d)
    if best < min_r2:
        return FilterKind("noise", best, r2_gabor=r2g, r2_blob=r2d)
    if r2d >= r2g - blob_margin:
        a, b = pd[0], pd[1]
        surround = bool(a * b > 0 and abs(b) > 0.2 * abs(a) and pd[3] > pd[2])
        return FilterKind("blob", r2d, r2_gabor=r2g, r2_blob=r2d, centre_surround=surround,
                          params=dict(zip(("A", "B", "sigma1", "sigma2", "x0", "y0", "c"), map(float, pd), strict=True)))
    phi = float(pg[7])
    kind: Kind = "edge" if abs(math.sin(phi)) >= abs(math.cos(phi)) else "bar"
    angle = (math.degrees(float(pg[3])) + 90.0) % 180.0  # the edge runs across the wave direction
    return FilterKind(kind, r2g, angle, r2_gabor=r2g, r2_blob=r2d,
                      params=dict(zip(("A", "x0", "y0", "theta", "sigma_u", "sigma_v", "f", "phi", "c"),
                                      map(float, pg), strict=True)))


def classify_filters(weight: Any, layer: str = "conv1", *, min_r2: float = 0.5) -> FilterKinds:
    """Label every filter of ``weight`` (out, in, kh, kw): an array, a tensor, or the weight
    of a first conv layer (see :func:`convlens.views.conv_weight`)."""
    if hasattr(weight, "detach"):
        weight = weight.detach().cpu().double().numpy()
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4:
        raise ConfigError(f"filter weights must be 4-D (out, in, kh, kw), got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ConfigError(f"the {layer} weights hold NaN or infinite values; nothing to classify")
    if min(w.shape[2:]) < 3:
        raise ConfigError(f"{layer}'s filters are {w.shape[2]}×{w.shape[3]}; classifying needs at least 3×3")
    return FilterKinds(layer, [classify_filter(f, min_r2=min_r2) for f in w])
