"""Image folders: one sub-folder per class, read through Pillow (PNG, JPEG, WebP).

The layout torchvision's ``ImageFolder``, Keras and Hugging Face ``datasets`` read::

    photos/cat/001.jpg            photos/train/cat/001.jpg
    photos/cat/002.png    or      photos/train/dog/...
    photos/dog/...                photos/test/cat/...

Class names are the sub-folders' names, sorted; labels index them. Images may sit
in nested folders below their class folder. With ``train/`` and ``test/`` sub-folders
the split is theirs; otherwise a seeded, per-class fraction ``test`` of each class
(default 0.2) is the test split and the rest the training split.

Every image is decoded to uint8, converted to gray (``channels=1``) or RGB
(``channels=3``; default: RGB if any image has colour), and, with ``size=(H, W)``,
resized so it covers ``H×W`` and centre-cropped to it. Without ``size`` all images
must have one size.

The first load of a folder reads every image once: it checks each one (Pillow's
decompression-bomb guard stays on, and convlens refuses images above
:data:`convlens.data.images.MAX_IMAGE_PIXELS` before decoding them) and records, per
image, its path, file size and modification time, label, pixel sums (for the mean and
std of any split) and a digest of its pixels. That index is cached (under
:func:`convlens.data.sources.cache_dir`, ``folder-index/``) and reused while the
folder's listing (paths, sizes, mtimes) is unchanged; a changed folder is indexed
again. It is written only after every image was read, so a folder with a bad image
leaves nothing in the cache.

A split that fits in ``memory_budget`` bytes (default :data:`MEMORY_BUDGET`, or
``CONVLENS_MEMORY_BUDGET``) is loaded into an :class:`~convlens.data.ImageDataset`;
a larger one becomes a :class:`~convlens.data.stream.StreamingDataset` that decodes
its images batch by batch (``stream=True`` or ``False`` forces either).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convlens.errors import ConfigError, DataError, ImageError

__all__ = [
    "EXTENSIONS",
    "MEMORY_BUDGET",
    "FolderIndex",
    "budget_bytes",
    "index_folder",
    "read_image",
]

#: File endings read as images (lower case).
EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
#: Bytes of decoded pixels a split may take in memory before it is streamed (1 GiB).
MEMORY_BUDGET = 1 << 30
ENV_MEMORY_BUDGET = "CONVLENS_MEMORY_BUDGET"
#: Bumped when the cached index's content changes.
INDEX_VERSION = 1

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "La"}
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40}


def budget_bytes(value: int | str | None = None) -> int:
    """Bytes from ``value`` (an int, or text like ``"512MB"``, ``"2G"``), else
    ``CONVLENS_MEMORY_BUDGET``, else :data:`MEMORY_BUDGET`."""
    raw = value if value is not None else os.environ.get(ENV_MEMORY_BUDGET)
    if raw is None or raw == "":
        return MEMORY_BUDGET
    if isinstance(raw, int) and not isinstance(raw, bool):
        n = raw
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(raw))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ConfigError(f"memory budget {raw!r} must be a number of bytes, e.g. 2GB, 512MB or 1000000")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n < 0:
        raise ConfigError(f"memory budget {raw!r} must not be negative")
    return n


# --- one image --------------------------------------------------------------------------------


def _open(path: Path) -> Any:
    """Pillow's lazy image (header read, pixels not yet decoded), size-checked."""
    from PIL import Image, UnidentifiedImageError

    from convlens.data.images import MAX_IMAGE_PIXELS

    try:
        with warnings.catch_warnings():  # Pillow warns below its hard limit; convlens refuses there itself
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageError(f"image file {path} is larger than the {MAX_IMAGE_PIXELS:,} pixels convlens reads "
                         "(a decompression bomb?); remove it from the folder or scale it down") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image file Pillow can read (PNG, JPEG or WebP); remove it from "
                         "the folder or replace it") from None
    except OSError as exc:
        raise ImageError(f"cannot read image file {path}: {exc}") from None
    w, h = img.size
    if w * h > MAX_IMAGE_PIXELS:
        img.close()
        raise ImageError(f"image file {path} is {w}×{h} pixels ({w * h:,}), more than the {MAX_IMAGE_PIXELS:,} "
                         "convlens reads (a decompression bomb?); remove it from the folder or scale it down")
    return img


def read_image(path: str | os.PathLike[str], channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image file to uint8 ``(channels, H, W)``: gray or RGB (transparency
    composited onto white), and with ``size=(H, W)`` resized to cover it and
    centre-cropped (bilinear, antialiased when shrinking).

    Raises:
        ImageError: the file is not an image, too large, or corrupt (the message names it).
    """
    from PIL import Image, ImageOps

    p = Path(path)
    img = _open(p)
    try:
        with img:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            img = img.convert("L" if channels == 1 else "RGB")
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # truncated or corrupt
        raise ImageError(f"image file {p} is corrupt or unreadable ({exc}); remove it from the folder or "
                         "replace it") from None
    if size is not None:
        out_h, out_w = size
        scale = max(out_h / img.height, out_w / img.width)
        new_w, new_h = max(out_w, round(img.width * scale)), max(out_h, round(img.height * scale))
        if (new_w, new_h) != img.size:
            img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
        left, top = (new_w - out_w) // 2, (new_h - out_h) // 2
        img = img.crop((left, top, left + out_w, top + out_h))
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)


# --- the index ----------------------------------------------------------------------------------


@dataclass(eq=False)
class FolderIndex:
    """What one pass over a folder learned, per image (arrays of length N, in index order:
    by split folder, class, then path).

    ``paths`` are relative to ``root``; ``group`` is the split sub-folder (``"train"``,
    ``"test"``) or ``""`` without them; ``sums``/``squares`` (N, C) int64 are the
    per-channel sums of the decoded pixels and of their squares, ``zeros`` (N,) the number
    of 0 pixels, ``digests`` (N, 32) uint8 the SHA-256 of each decoded image. It is small
    (no pixels) and pickles as plain arrays.
    """

    root: Path
    classes: tuple[str, ...]
    paths: np.ndarray  # (N,) str
    group: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64
    file_sizes: np.ndarray  # (N,) int64
    mtimes: np.ndarray  # (N,) int64 ns
    channels: int
    size: tuple[int, int]  # (H, W) of the decoded images
    sums: np.ndarray  # (N, C) int64
    squares: np.ndarray  # (N, C) int64
    zeros: np.ndarray  # (N,) int64
    digests: np.ndarray  # (N, 32) uint8

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> Path:
        return self.root / str(self.paths[i])

    def stats(self, positions: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Exact per-channel mean and population std (pixels scaled to [0, 1]) of the images
        at ``positions``, from the integer sums."""
        count = len(positions) * self.size[0] * self.size[1]
        if count == 0:
            return (0.0,) * self.channels, (1.0,) * self.channels
        s = self.sums[positions].sum(axis=0).astype(np.float64)
        q = self.squares[positions].sum(axis=0).astype(np.float64)
        mean = s / count / 255.0
        var = np.maximum(q / count / 255.0**2 - mean**2, 0.0)
        std = np.sqrt(var)
        return tuple(float(m) for m in mean), tuple(float(v) if v > 0 else 1.0 for v in std)


def _listing(root: Path) -> tuple[list[tuple[str, str, str]], str]:
    """``[(group, class, relative path)]`` of the folder, sorted, and the layout
    (``"split"`` with train/ and test/ sub-folders, else ``"classes"``)."""
    if not root.exists():
        raise DataError(f"image folder {root} does not exist; check the path")
    if not root.is_dir():
        raise DataError(f"image folder {root} is not a directory (give the folder holding one sub-folder per class)")
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split = "train" in subdirs and "test" in subdirs
    groups = [("train", root / "train"), ("test", root / "test")] if split else [("", root)]
    found: list[tuple[str, str, str]] = []
    for group, top in groups:
        classes = sorted(p.name for p in top.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise DataError(f"image folder {top} has no class sub-folders; put the images of each class in a "
                            f"sub-folder named after it ({top}/cat/001.jpg, {top}/dog/...)")
        for cls in classes:
            n_before = len(found)
            for dirpath, dirnames, filenames in os.walk(top / cls):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for fname in sorted(filenames):
                    if fname.startswith("."):
                        continue
                    full = Path(dirpath) / fname
                    if full.suffix.lower() not in EXTENSIONS:
                        raise DataError(f"{full} is not an image file convlens reads ({', '.join(EXTENSIONS)}); "
                                        "move it out of the class folder")
                    found.append((group, cls, str(full.relative_to(root))))
            if len(found) == n_before:
                raise DataError(f"class folder {top / cls} holds no images; add some or remove the folder")
    return found, "split" if split else "classes"


def _cache_path(root: Path, channels: int | None, size: tuple[int, int] | None) -> Path:
    from convlens.data.sources import cache_dir

    key = f"{root}\0{channels}\0{size}".encode()
    return cache_dir() / "folder-index" / f"{hashlib.sha256(key).hexdigest()[:24]}.npz"


def _read_cached(path: Path, root: Path, rels: np.ndarray, sizes: np.ndarray, mtimes: np.ndarray
                 ) -> FolderIndex | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != INDEX_VERSION or str(z["root"]) != str(root):
                return None
            paths = z["paths"]
            if len(paths) != len(rels) or not np.array_equal(paths, rels):
                return None
            if not (np.array_equal(z["file_sizes"], sizes) and np.array_equal(z["mtimes"], mtimes)):
                return None
            h, w = (int(v) for v in z["size"])
            return FolderIndex(root, tuple(str(c) for c in z["classes"]), paths, z["group"], z["labels"],
                               sizes, mtimes, int(z["channels"]), (h, w), z["sums"], z["squares"], z["zeros"],
                               z["digests"])
    except (OSError, KeyError, ValueError):  # missing or unreadable: index again
        return None


def _write_cached(path: Path, index: FolderIndex) -> None:
    from convlens._atomic import write_bytes_atomic

    buf = io.BytesIO()
    np.savez(buf, version=INDEX_VERSION, root=str(index.root), classes=np.array(index.classes, dtype=str),
             paths=index.paths, group=index.group, labels=index.labels, file_sizes=index.file_sizes,
             mtimes=index.mtimes, channels=index.channels, size=np.array(index.size), sums=index.sums,
             squares=index.squares, zeros=index.zeros, digests=index.digests)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buf.getvalue())


_CHUNK = 256


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _headers(root: Path, rels: np.ndarray) -> Iterator[tuple[tuple[int, int], bool]]:
    def head(rel: str) -> tuple[tuple[int, int], bool]:
        img = _open(root / str(rel))
        with img:
            return img.size, img.mode not in _GRAY_MODES

    with ThreadPoolExecutor(_workers()) as pool:
        for start in range(0, len(rels), _CHUNK):  # a bounded number of futures at a time
            yield from pool.map(head, rels[start:start + _CHUNK])


def index_folder(root: str | os.PathLike[str], *, channels: int | None = None,
                 size: tuple[int, int] | None = None, progress: bool | None = None) -> FolderIndex:
    """The :class:`FolderIndex` of ``root`` for images decoded with ``channels`` and ``size``
    (see the module docstring), from the cache while the folder is unchanged.

    Raises:
        DataError, ImageError: the folder's layout is wrong, an image cannot be read, is
            too large, or (without ``size``) has another size than the others.
    """
    from convlens._progress import progress_bar

    root = Path(root).expanduser().resolve()
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    listing, _layout = _listing(root)
    # compact arrays at once (no per-image Python objects kept: they would stay in the
    # allocator after the index is built, and peak memory would grow with the folder)
    group = np.array([g for g, _, _ in listing], dtype=str)
    classes = tuple(sorted({cls for _, cls, _ in listing}))
    labels = np.array([classes.index(cls) for _, cls, _ in listing], dtype=np.int64)
    rels = np.array([rel for _, _, rel in listing], dtype=str)
    del listing
    n = len(rels)
    sizes, mtimes = np.empty(n, np.int64), np.empty(n, np.int64)
    try:
        for i, rel in enumerate(rels):
            st = os.stat(root / str(rel))
            sizes[i], mtimes[i] = st.st_size, st.st_mtime_ns
    except OSError as exc:
        raise DataError(f"cannot read {exc.filename}: {exc.strerror}; is the folder changing?") from None
    cache = _cache_path(root, channels, size)
    cached = _read_cached(cache, root, rels, sizes, mtimes)
    if cached is not None:
        return cached
    dims = np.empty((n, 2), np.int64)  # (W, H) of each file
    colour = False
    with progress_bar(f"checking {root.name}", n, enabled=progress) as bar:
        for i, ((w, h), coloured) in enumerate(_headers(root, rels)):
            dims[i] = w, h
            colour |= coloured
            bar.advance()
    if size is None:
        found, counts = np.unique(dims, axis=0, return_counts=True)
        w0, h0 = (int(v) for v in found[int(np.argmax(counts))])
        other = np.flatnonzero((dims[:, 0] != w0) | (dims[:, 1] != h0))
        if other.size:
            w, h = (int(v) for v in dims[other[0]])
            raise DataError(f"image {root / str(rels[other[0]])} is {w}×{h} pixels but most images in {root} are "
                            f"{w0}×{h0}; give a size to resize them all (e.g. folder:{root}?size={h0}x{w0})")
        out = (h0, w0)
    else:
        out = size
    c = channels if channels is not None else (3 if colour else 1)
    sums = np.zeros((n, c), np.int64)
    squares = np.zeros((n, c), np.int64)
    zeros = np.zeros(n, np.int64)
    digests = np.zeros((n, 32), np.uint8)

    def measure(i: int) -> None:
        a = read_image(root / str(rels[i]), c, size)
        flat = a.reshape(c, -1).astype(np.int64)
        sums[i] = flat.sum(axis=1)
        squares[i] = (flat * flat).sum(axis=1)
        zeros[i] = int((a == 0).sum())
        digests[i] = np.frombuffer(hashlib.sha256(a.tobytes()).digest(), np.uint8)

    with progress_bar(f"indexing {root.name}", n, enabled=progress) as bar, ThreadPoolExecutor(_workers()) as pool:
        for start in range(0, n, _CHUNK):  # a bounded number of futures at a time: memory flat in n
            for _ in pool.map(measure, range(start, min(start + _CHUNK, n))):
                bar.advance()
    index = FolderIndex(root, classes, rels, group, labels, sizes, mtimes, c, out, sums, squares, zeros, digests)
    _write_cached(cache, index)  # only now: every image was read
    return index


def split_positions(index: FolderIndex, split: str, test: float, seed: int) -> np.ndarray:
    """Positions in ``index`` of the images of ``split``: its sub-folder, or a seeded
    per-class fraction ``test`` of each class for the test split (the rest: train)."""
    if split not in ("train", "test"):
        from convlens.errors import unknown_name

        raise DataError(unknown_name("split", split, ("train", "test")))
    groups = set(index.group.tolist())
    if groups != {""}:
        return np.flatnonzero(index.group == split).astype(np.int64)
    if not 0.0 < test < 1.0:
        raise ConfigError(f"the test fraction must be between 0 and 1 (exclusive), got {test}")
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(index), dtype=bool)
    for label in range(len(index.classes)):
        members = np.flatnonzero(index.labels == label)
        k = min(len(members) - 1, round(len(members) * test)) if len(members) > 1 else 0
        is_test[rng.permutation(members)[:k]] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test).astype(np.int64)


def decode(index: FolderIndex, positions: Sequence[int] | np.ndarray, *, workers: int | None = None) -> np.ndarray:
    """uint8 ``(len(positions), C, H, W)``: the images at ``positions``, decoded as indexed."""
    pos = np.asarray(positions, dtype=np.int64)
    c, (h, w) = index.channels, index.size
    out = np.empty((len(pos), c, h, w), dtype=np.uint8)

    def one(j: int) -> None:
        out[j] = read_image(index.path(int(pos[j])), c, index.size)  # a no-op fit for images of that size

    if len(pos) <= 1:
        for j in range(len(pos)):
            one(j)
    else:
        with ThreadPoolExecutor(workers or _workers()) as pool:
            list(pool.map(one, range(len(pos))))
    return out


def _per_channel(what: str, values: Sequence[float], channels: int) -> tuple[float, ...]:
    v = tuple(float(x) for x in values)
    if len(v) == 1:
        v = v * channels
    if len(v) != channels:
        raise ConfigError(f"{what} has {len(v)} values for {channels}-channel images; give 1 or {channels}")
    if what == "std" and min(v) <= 0:
        raise ConfigError(f"std {v} must be positive (it divides the pixels)")
    return v
