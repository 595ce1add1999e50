"""CIFAR-10 and CIFAR-100 in their binary distribution formats (never the pickled
Python versions).

The archive (``cifar-10-binary.tar.gz``, ``cifar-100-binary.tar.gz``) is downloaded with
pooch into the cache (:func:`convlens.data.sources.cache_dir`, sub-folder ``cifar10`` or
``cifar100``), verified against the md5 the CIFAR page publishes, and only its expected
regular files are extracted, into a temporary folder renamed into place when all are
there (so the cache never holds half an extraction). A data directory
(``data_dir=``/``--data-dir``/``CONVLENS_DATA_DIR``) that holds the extracted folder
(``cifar-10-batches-bin/``, ``cifar-100-binary/``) or the archive is used instead; one
that holds neither is passed over. ``CONVLENS_MIRROR`` or ``base_url=`` replace the
download URL as for the IDX datasets, and ``checksums=`` the published hashes (for a
mirror of other files, e.g. the tests' server).

A record is 1 label byte (CIFAR-100: a coarse and a fine label byte; convlens uses the
fine label) then 3072 bytes: the 1024 red, 1024 green and 1024 blue values of a 32×32
image in row-major order. Mean and std are computed exactly from the training images.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convlens.data.sources import ENV_DATA_DIR, Source, _base_urls, _fetch, cache_dir
from convlens.errors import DataError, DownloadError

__all__ = ["CIFAR", "CifarFormat", "load_cifar", "read_cifar_bin"]


@dataclass(frozen=True)
class CifarFormat:
    """One CIFAR binary distribution: its archive, folder, files and record layout."""

    source: Source
    archive: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_bytes: int
    names_file: str

    def files(self) -> tuple[str, ...]:
        return (*self.train, *self.test, self.names_file)


_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_URLS = ("https://www.cs.toronto.edu/~kriz/",)

#: The binary CIFAR versions by dataset name. md5s as the CIFAR page
#: (www.cs.toronto.edu/~kriz/cifar.html) publishes them for the binary versions.
CIFAR: dict[str, CifarFormat] = {
    "cifar10": CifarFormat(
        Source("cifar10", "CIFAR-10", _CIFAR10_CLASSES, _URLS,
               {"cifar-10-binary.tar.gz": "md5:c32a1d4ab5d03f1284b67883e8d87530"}, None, None, files={},
               homepage="https://www.cs.toronto.edu/~kriz/cifar.html"),
        "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",), 1, "batches.meta.txt"),
    "cifar100": CifarFormat(
        Source("cifar100", "CIFAR-100", (), _URLS,
               {"cifar-100-binary.tar.gz": "md5:03b5dce01913d631647c71ecec9e9cb8"}, None, None, files={},
               homepage="https://www.cs.toronto.edu/~kriz/cifar.html"),
        "cifar-100-binary.tar.gz", "cifar-100-binary", ("train.bin",), ("test.bin",), 2, "fine_label_names.txt"),
}

_RECORD = 3 * 32 * 32


def read_cifar_bin(path: Path, label_bytes: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64)`` of one binary batch file.

    Raises:
        DataError: the file is missing, its size is no whole number of records, or a
            label is out of range (the message names the file).
    """
    size = _RECORD + label_bytes
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"CIFAR file {path} does not exist; delete its folder to extract the archive again") from None
    except OSError as exc:
        raise DataError(f"cannot read CIFAR file {path}: {exc.strerror or exc}") from None
    if raw.size == 0 or raw.size % size:
        raise DataError(f"CIFAR file {path} holds {raw.size} bytes, not a whole number of {size}-byte records; "
                        "it is corrupt or truncated: delete it (or its folder) and load again")
    rec = raw.reshape(-1, size)
    labels = rec[:, label_bytes - 1].astype(np.int64)
    if n_classes and int(labels.max()) >= n_classes:
        raise DataError(f"CIFAR file {path} has label {int(labels.max())} but the dataset has {n_classes} classes; "
                        "is it another CIFAR version?")
    return np.ascontiguousarray(rec[:, label_bytes:].reshape(-1, 3, 32, 32)), labels


def _complete(folder: Path, fmt: CifarFormat) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in fmt.files())


def _extract(archive: Path, dest_parent: Path, fmt: CifarFormat) -> Path:
    """Extract the expected files of ``archive`` into ``dest_parent/fmt.folder``, atomically."""
    target = dest_parent / fmt.folder
    if _complete(target, fmt):
        return target
    dest_parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fmt.folder}.", suffix=".part", dir=dest_parent))
    try:
        wanted = {f"{fmt.folder}/{f}": f for f in fmt.files()}
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    name = member.name.removeprefix("./")
                    if name not in wanted or not member.isfile():
                        continue
                    src = tar.extractfile(member)
                    if src is None:
                        continue
                    with src, open(tmp / wanted[name], "wb") as out:
                        shutil.copyfileobj(src, out)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{archive} is not a readable {fmt.source.title} archive ({exc}); delete it and load "
                            "again to download it afresh") from None
        missing = [f for f in fmt.files() if not (tmp / f).is_file()]
        if missing:
            raise DataError(f"{archive} lacks {', '.join(f'{fmt.folder}/{m}' for m in missing)}; is it the "
                            f"{fmt.source.title} binary version ({fmt.archive})?")
        record = _RECORD + fmt.label_bytes
        for f in (*fmt.train, *fmt.test):
            n = (tmp / f).stat().st_size
            if n == 0 or n % record:
                raise DataError(f"CIFAR file {fmt.folder}/{f} in {archive} holds {n} bytes, not a whole number of "
                                f"{record}-byte records; the archive is corrupt: delete it and load again")
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(target)  # an incomplete folder from elsewhere
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _hash_ok(path: Path, known: str) -> bool:
    import pooch

    alg, _, expected = known.partition(":")
    return pooch.file_hash(str(path), alg=alg.lower()) == expected.lower()


def locate_cifar(name: str, data_dir: str | os.PathLike[str] | None = None, *, base_url: str | None = None,
                 checksums: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """The folder of the extracted binary files of ``name`` and where they came from."""
    fmt = CIFAR[name]
    src = fmt.source
    if checksums is not None:
        from dataclasses import replace

        src = replace(src, checksums=dict(checksums))
    d = Path(data_dir).expanduser() if data_dir is not None else (
        Path(os.environ[ENV_DATA_DIR]).expanduser() if os.environ.get(ENV_DATA_DIR) else None)
    if d is not None:
        for folder in (d / fmt.folder, d / name / fmt.folder):
            if _complete(folder, fmt):
                return folder, str(folder.resolve())
        for archive in (d / fmt.archive, d / name / fmt.archive):
            if archive.is_file():
                known = src.checksum(fmt.archive)
                if known is not None and not _hash_ok(archive, known):
                    raise DownloadError(f"checksum mismatch for {archive}: it is not the published {src.title} "
                                        f"binary archive ({known}); replace it with a verified copy")
                return _extract(archive, cache_dir() / name, fmt), str(archive.resolve())
    folder = cache_dir() / name
    if _complete(folder / fmt.folder, fmt):
        return folder / fmt.folder, str(folder / fmt.folder)
    archive, url = _fetch(src, fmt.archive, folder, _base_urls(src, base_url))
    return _extract(archive, folder, fmt), url


@functools.lru_cache(maxsize=4)
def _train_stats(folder: str, key: tuple[tuple[int, int], ...], name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from convlens.data.arrays import _channel_stats

    del key  # cache key only (file sizes and mtimes)
    fmt = CIFAR[name]
    parts = [read_cifar_bin(Path(folder) / f, fmt.label_bytes, 0)[0] for f in fmt.train]
    return _channel_stats(np.concatenate(parts))


def _class_names(folder: Path, fmt: CifarFormat) -> tuple[str, ...]:
    path = folder / fmt.names_file
    try:
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the class names {path}: {exc}; delete {folder} and load again") from None
    if fmt.source.classes and names != fmt.source.classes:
        raise DataError(f"{path} names the classes {list(names)}, not {fmt.source.title}'s; is it another dataset?")
    if not names:
        raise DataError(f"{path} names no classes; delete {folder} and load again")
    return names


def load_cifar(name: str, split: str = "train", *, data_dir: str | os.PathLike[str] | None = None,
               base_url: str | None = None, checksums: Mapping[str, str] | None = None,
               mean: Any = None, std: Any = None) -> Any:
    """One split of CIFAR-10 or CIFAR-100 (the parts of an :class:`~convlens.data.ImageDataset`,
    uint8 ``(N, 3, 32, 32)``)."""
    import torch

    from convlens.data.folder import _per_channel
    from convlens.data.loaded import Loaded

    if split not in ("train", "test"):
        from convlens.errors import unknown_name

        raise DataError(unknown_name("split", split, ("train", "test")))
    fmt = CIFAR[name]
    folder, origin = locate_cifar(name, data_dir, base_url=base_url, checksums=checksums)
    classes = _class_names(folder, fmt)
    parts = [read_cifar_bin(folder / f, fmt.label_bytes, len(classes)) for f in getattr(fmt, split)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if mean is None or std is None:
        key = tuple((os.stat(folder / f).st_size, os.stat(folder / f).st_mtime_ns) for f in fmt.train)
        m, s = _train_stats(str(folder), key, name)
    else:
        m, s = _per_channel("mean", mean, 3), _per_channel("std", std, 3)
    return Loaded(images=torch.from_numpy(images), labels=torch.from_numpy(labels), classes=classes,
                        name=name, split=split, source=origin, mean=m, std=s)
