"""Is this data what it says it is? Fingerprints of image sets and the rules that compare them.

Two checks use them:

1. **A dataset's name against its files** (:func:`check_named`, run by
   :func:`convlens.data.load_dataset`). A compressed images file whose md5 is the
   published checksum of *another* registered dataset's file is that dataset. Otherwise
   (uncompressed files, subsets, other copies) the mean pixel intensity ``m`` of the
   images (scaled to [0, 1]) decides: the files are taken for registered dataset ``D``,
   not the named one, when ``m`` lies within :data:`NEAR` (0.04) of ``D``'s published
   training-set mean **and** at least :data:`MARGIN` (0.03) nearer to it than to the
   named dataset's. The published means are MNIST 0.1307, Kuzushiji-MNIST 0.1918,
   Fashion-MNIST 0.2860 (:attr:`Source.pixel_mean`). Files near no registered dataset
   (an inverted or home-made set) pass: the rule only says "these are D" when they
   clearly are. Fewer than :data:`MIN_IMAGES` images are not judged.
2. **The data a run is used with against the data it was trained on**
   (:func:`check_against`). Training records a :class:`Fingerprint` of each split
   (count, image shape, mean pixel, fraction of zero pixels, a SHA-256 of pixels and
   labels) in the run's data spec. Data with the same SHA-256 as a recorded split is
   that split; other data (another copy or a subset) must have the recorded image shape
   and a mean pixel within :data:`RUN_TOLERANCE` (0.05) of the training split's.

Why the mean: it is cheap, needs no labels, is stable over subsets (the per-digit
means of MNIST run from 0.077 for ones to 0.175 for zeros; any mix of digits lies in
between), and separates the three datasets (MNIST 0.13, KMNIST 0.19, Fashion-MNIST
0.29; Fashion-MNIST also has far fewer black pixels: about half, against 81% for MNIST).

>>> import numpy as np
>>> digits = np.zeros((100, 28, 28), np.uint8); digits[:, 8:20, 10:17] = 255  # mean 0.107
>>> fingerprint(digits).mean.__round__(3)
0.107
>>> look_alike(0.29, "mnist").name
'fashion-mnist'
>>> look_alike(0.13, "mnist") is None
True
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convlens.errors import DataError

__all__ = [
    "MARGIN",
    "MIN_IMAGES",
    "NEAR",
    "RUN_TOLERANCE",
    "Fingerprint",
    "check_against",
    "check_named",
    "fingerprint",
    "look_alike",
]

NEAR = 0.04
MARGIN = 0.03
RUN_TOLERANCE = 0.05
MIN_IMAGES = 32


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a set of images: ``n`` images of ``shape`` (C, H, W), their mean
    pixel (scaled to [0, 1]), the fraction of pixels that are 0, and ``sha256`` of the
    pixels and labels."""

    n: int
    shape: tuple[int, int, int]
    mean: float
    zero_fraction: float
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fingerprint:
        c, h, w = (int(v) for v in d["shape"])
        return cls(int(d["n"]), (c, h, w), float(d["mean"]), float(d["zero_fraction"]), str(d["sha256"]))

    def describe(self) -> str:
        return f"mean pixel {self.mean:.3f}, {self.zero_fraction:.0%} black pixels"


def fingerprint(images: Any, labels: Any = None) -> Fingerprint:
    """The :class:`Fingerprint` of uint8 ``images`` (N×H×W or N×C×H×W, NumPy or torch)
    and, if given, their ``labels``. Images streamed from disk
    (:class:`convlens.data.stream.LazyImages`) give the fingerprint of their index."""
    streamed = getattr(images, "fingerprint", None)
    if callable(streamed):
        return streamed(labels)
    a = np.ascontiguousarray(images.numpy() if hasattr(images, "numpy") else np.asarray(images))
    if a.dtype != np.uint8 or a.ndim not in (3, 4):
        raise DataError(f"a fingerprint needs uint8 images N×H×W or N×C×H×W, got {a.dtype} of shape {a.shape}")
    shape = (1, *a.shape[1:]) if a.ndim == 3 else a.shape[1:]
    counts = np.bincount(a.reshape(-1), minlength=256)
    total = max(int(counts.sum()), 1)
    mean = float((counts * np.arange(256)).sum() / total / 255.0)
    digest = hashlib.sha256(a.tobytes())
    if labels is not None:
        lab = labels.numpy() if hasattr(labels, "numpy") else np.asarray(labels)
        digest.update(np.ascontiguousarray(lab.astype(np.int64)).tobytes())
    c, h, w = (int(v) for v in shape)
    return Fingerprint(len(a), (c, h, w), mean, float(counts[0] / total), digest.hexdigest())


def look_alike(mean: float, named: Any) -> Any:
    """The registered source that images with mean pixel ``mean`` clearly are, if it is
    not ``named`` (a name or :class:`~convlens.data.sources.Source`); else None (see the
    module docstring for the rule)."""
    from convlens.data.sources import SOURCES, get_source

    src = get_source(named)
    known = [s for s in SOURCES.values() if s.pixel_mean is not None]
    if src.pixel_mean is None or not known:
        return None
    nearest = min(known, key=lambda s: abs(mean - float(s.pixel_mean or 0.0)))
    d_nearest = abs(mean - float(nearest.pixel_mean or 0.0))
    if nearest.name == src.name or d_nearest > NEAR:
        return None
    return nearest if abs(mean - src.pixel_mean) >= d_nearest + MARGIN else None


@functools.lru_cache(maxsize=16)
def _md5(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # cache keys only
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _official(path: Path) -> Any:
    """The source whose published checksum ``path`` has, or None."""
    from convlens.data.sources import SOURCES

    known = {(fname, digest.partition(":")[2] or digest): s for s in SOURCES.values()
             for fname, digest in s.checksums.items()}
    if not any(fname == path.name for fname, _ in known):
        return None
    st = path.stat()
    digest = _md5(str(path), st.st_size, st.st_mtime_ns)
    return known.get((path.name, digest))


def check_named(named: Any, images: np.ndarray, path: str | os.PathLike[str], split: str) -> None:
    """Raise :class:`DataError` if the images read from ``path`` are clearly another
    registered dataset than ``named`` (the rule of the module docstring)."""
    from convlens.data.sources import get_source

    src = get_source(named)
    p = Path(path)
    official = _official(p) if p.is_file() else None
    if official is not None:
        if official.name == src.name:
            return
        raise DataError(
            f"{p} is the official {official.title} {split} images file (its md5 is {official.title}'s published "
            f"checksum), not {src.title}; point --data-dir at the {src.title} files, or pass --dataset {official.name}"
        )
    if len(images) < MIN_IMAGES:
        return
    fp = fingerprint(images)
    other = look_alike(fp.mean, src)
    if other is not None:
        raise DataError(
            f"the {split} images in {p} look like {other.title}, not {src.title} ({fp.describe()}; "
            f"{other.title} has a mean pixel of {other.pixel_mean}, {src.title} {src.pixel_mean}); point "
            f"--data-dir at the {src.title} files, or pass --dataset {other.name}"
        )


def check_against(recorded: dict[str, Any], data: Any, *, what: str, run: str, where: str = "") -> None:
    """Raise :class:`DataError` unless ``data`` (an ImageDataset) matches the fingerprints
    ``recorded`` at training time (``{"train": {...}, "test": {...}}``; see the module
    docstring). ``what`` names the data in the message, ``run`` the run, ``where`` the
    files it was trained on."""
    prints = {k: Fingerprint.from_dict(v) for k, v in recorded.items() if isinstance(v, dict)}
    if not prints:
        return
    fp = fingerprint(data.images, data.labels)
    if any(p.sha256 == fp.sha256 for p in prints.values()):
        return
    ref = prints.get("train") or next(iter(prints.values()))
    fix = f"point --data-dir at the files it was trained on{f' ({where})' if where else ''}"
    if fp.shape != ref.shape:
        c, h, w = ref.shape
        c2, h2, w2 = fp.shape
        raise DataError(f"{what} holds {c2}×{h2}×{w2} images but {run} was trained on {c}×{h}×{w}; {fix}")
    if len(data) >= MIN_IMAGES and abs(fp.mean - ref.mean) > RUN_TOLERANCE:
        raise DataError(
            f"{what} does not look like the data {run} was trained on ({fp.describe()}; in training "
            f"{ref.describe()}); {fix}"
        )
