"""The IDX file format of MNIST and its siblings, read and written with NumPy.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the
elements in C order, big-endian::

    0x00 0x00 <type> <ndim>   dim_0 ... dim_{ndim-1}   data

``type`` is 0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int, 0x0D float or 0x0E double.
The files are often gzip-compressed; :func:`read_idx` recognises gzip by its magic
bytes (1f 8b), whatever the file is called.

Every problem with a file raises :class:`convlens.errors.IDXError` naming the file.

>>> import numpy as np, tempfile, os
>>> tmp = tempfile.TemporaryDirectory()
>>> path = os.path.join(tmp.name, "x-idx3-ubyte.gz")
>>> write_idx(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
>>> read_idx(path).shape
(2, 3, 4)
>>> tmp.cleanup()
"""

from __future__ import annotations

import gzip
import os
import zlib
from math import prod
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from convlens._atomic import write_bytes_atomic
from convlens.errors import IDXError

__all__ = ["IDX_TYPES", "read_idx", "read_idx_pair", "write_idx"]

#: IDX type byte -> big-endian NumPy dtype.
IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_NAMES = {0x08: "ubyte", 0x09: "byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}
_GZIP_MAGIC = b"\x1f\x8b"
_FIX = "re-download it, or point --data-dir / CONVLENS_DATA_DIR at a good copy"


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed if it is gzip (detected by magic bytes)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IDXError(f"IDX file {path} does not exist; check the path or {_FIX}") from None
    except IsADirectoryError:
        raise IDXError(f"IDX file {path} is a directory, not a file") from None
    except OSError as exc:
        raise IDXError(f"cannot read IDX file {path}: {exc.strerror or exc}") from None
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise IDXError(f"IDX file {path} is a truncated gzip stream (the download was cut short?); {_FIX}") from None
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise IDXError(f"IDX file {path} is corrupt gzip ({exc}); {_FIX}") from None


def _parse(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 4:
        raise IDXError(f"IDX file {path} is too short ({len(data)} bytes) to hold an IDX header; {_FIX}")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(
            f"IDX file {path} has a bad magic number 0x{data[:4].hex()} (an IDX file starts with 0x0000); "
            f"it is not an IDX file or is corrupt; {_FIX}"
        )
    type_byte, ndim = data[2], data[3]
    dtype = IDX_TYPES.get(type_byte)
    if dtype is None:
        known = ", ".join(f"0x{k:02X} {v}" for k, v in _TYPE_NAMES.items())
        raise IDXError(f"IDX file {path} has unknown element type 0x{type_byte:02X} (known: {known}); {_FIX}")
    if ndim == 0:
        raise IDXError(f"IDX file {path} declares 0 dimensions; {_FIX}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(
            f"IDX file {path} is truncated inside its header ({len(data)} bytes, "
            f"{ndim} dimensions need {header}); {_FIX}"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = prod(shape) * dtype.itemsize
    actual = len(data) - header
    if actual < expected:
        raise IDXError(
            f"IDX file {path} is truncated: shape {shape} of {_TYPE_NAMES[type_byte]} needs "
            f"{expected} data bytes but only {actual} are there; {_FIX}"
        )
    if actual > expected:
        raise IDXError(
            f"IDX file {path} has {actual - expected} unexpected bytes after the data of shape {shape}; "
            f"the file is corrupt or not what its header says; {_FIX}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a native-endian, writable NumPy array.

    Validates the magic number, element type, dimensions and that the payload holds
    exactly the number of bytes the header announces.

    Raises:
        IDXError: the file is missing, unreadable, not IDX, or corrupt; the message
            names the file.
    """
    p = Path(path)
    return _parse(_read_bytes(p), p)


def write_idx(path: str | os.PathLike[str], array: ArrayLike, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file, atomically.

    ``compress`` defaults to gzip when ``path`` ends with ``.gz``. The gzip header
    carries no timestamp, so the same array always gives the same bytes.

    Raises:
        IDXError: the array's dtype has no IDX type, it has no or too many dimensions,
            or a dimension does not fit in 32 bits.
    """
    p = Path(path)
    arr = np.asarray(array)
    native = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
    code = native.get(arr.dtype.newbyteorder("="))
    if code is None:
        kinds = ", ".join(str(dt.newbyteorder("=")) for dt in IDX_TYPES.values())
        raise IDXError(f"cannot write {p}: dtype {arr.dtype} has no IDX type (use one of {kinds})")
    if not 1 <= arr.ndim <= 255:
        raise IDXError(f"cannot write {p}: IDX needs 1 to 255 dimensions, the array has {arr.ndim}")
    if any(d >= 2**32 for d in arr.shape):
        raise IDXError(f"cannot write {p}: dimension sizes {arr.shape} do not fit in 32 bits")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    body = header + np.ascontiguousarray(arr, dtype=IDX_TYPES[code]).tobytes()
    if compress is None:
        compress = p.name.endswith(".gz")
    if compress:
        body = gzip.compress(body, mtime=0)
    write_bytes_atomic(p, body)


def read_idx_pair(
    images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Read matching image (N×H×W uint8, or colour N×C×H×W) and label (N uint8) IDX files.

    Colour images are 4-D: ``N×C×H×W`` with 1 or 3 channels (what ``convlens make-dataset``
    writes), or channels last, ``N×H×W×C``, which is turned into ``N×C×H×W``.

    Raises:
        IDXError: either file is corrupt, has the wrong type or number of
            dimensions, or the counts differ (the message names both files).
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise IDXError(
            f"IDX file {images_path} should hold images (3-D ubyte N×H×W, or 4-D N×C×H×W) but holds "
            f"{images.ndim}-D {images.dtype} of shape {images.shape}; is it a labels file?"
        )
    if images.ndim == 4 and images.shape[1] not in (1, 3):
        if images.shape[3] not in (1, 3):
            raise IDXError(f"IDX file {images_path} holds 4-D images of shape {images.shape}: neither N×C×H×W nor "
                           "N×H×W×C with 1 or 3 channels")
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))  # channels last -> N×C×H×W
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise IDXError(
            f"IDX file {labels_path} should hold labels (1-D ubyte) but holds "
            f"{labels.ndim}-D {labels.dtype} of shape {labels.shape}; is it an images file?"
        )
    if len(images) != len(labels):
        raise IDXError(
            f"image and label counts differ: {images_path} has {len(images)} images but "
            f"{labels_path} has {len(labels)} labels; the files do not belong together ({_FIX})"
        )
    return images, labels
