"""IDX reader and writer: round trips against a hand-built byte layout, and every
corruption raises IDXError naming the file."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from convlens.data import read_idx, read_idx_pair, write_idx
from convlens.errors import DataError, IDXError

# Independent description of the format: type byte and big-endian struct code.
TYPES = {np.uint8: (0x08, "B"), np.int8: (0x09, "b"), np.int16: (0x0B, "h"),
         np.int32: (0x0C, "i"), np.float32: (0x0D, "f"), np.float64: (0x0E, "d")}


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding built with struct, element by element (the oracle)."""
    code, fmt = TYPES[array.dtype.type]
    head = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + struct.pack(f">{array.size}{fmt}", *array.ravel().tolist())


def sample(dtype: type, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype) * 1e3


SHAPES = [(7,), (3, 4), (2, 3, 5), (2, 1, 3, 2), (0, 28, 28)]


@pytest.mark.parametrize("dtype", list(TYPES))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gz", [False, True])
def test_round_trip_and_byte_layout(tmp_path: Path, dtype: type, shape: tuple[int, ...], gz: bool) -> None:
    arr = sample(dtype, shape)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, arr)
    raw = path.read_bytes()
    assert raw.startswith(b"\x1f\x8b") == gz
    assert (gzip.decompress(raw) if gz else raw) == idx_bytes(arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype).newbyteorder("=") and back.shape == shape
    np.testing.assert_array_equal(back, arr)
    assert back.flags.writeable


def test_reader_on_hand_built_files(tmp_path: Path) -> None:
    arr = sample(np.int16, (3, 2, 2), seed=3)
    (tmp_path / "raw").write_bytes(idx_bytes(arr))
    (tmp_path / "comp").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(tmp_path / "raw"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "comp"), arr)


def test_gzip_is_detected_by_magic_bytes_not_suffix(tmp_path: Path) -> None:
    arr = sample(np.uint8, (4, 5))
    write_idx(tmp_path / "plain.gz", arr, compress=False)
    write_idx(tmp_path / "packed.idx", arr, compress=True)
    assert not (tmp_path / "plain.gz").read_bytes().startswith(b"\x1f\x8b")
    assert (tmp_path / "packed.idx").read_bytes().startswith(b"\x1f\x8b")
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "packed.idx"), arr)


def test_gzip_output_is_reproducible(tmp_path: Path) -> None:
    arr = sample(np.uint8, (5, 6))
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "b.gz", arr)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
                  shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)))
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, arr: np.ndarray) -> None:
    path = tmp_path_factory.mktemp("prop") / "x.gz"
    write_idx(path, arr)
    back = read_idx(path)
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)  # NaNs compare equal here


def test_real_mnist_file_matches_plain_parse(mnist_dir: Path) -> None:
    path = next(p for p in (mnist_dir / "t10k-images-idx3-ubyte.gz", mnist_dir / "t10k-images-idx3-ubyte") if p.exists())
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    magic, n, h, w = struct.unpack(">IIII", raw[:16])
    assert magic == 0x00000803
    images = read_idx(path)
    assert images.shape == (n, h, w) == (1500, 28, 28)
    oracle = np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, h, w)
    np.testing.assert_array_equal(images, oracle)


# --- corruption: every case names the file -------------------------------------------------

def good_bytes() -> bytes:
    return idx_bytes(sample(np.uint8, (4, 3, 3)))


def expect_error(path: Path, *fragments: str) -> IDXError:
    with pytest.raises(IDXError, match=re.escape(str(path))) as info:
        read_idx(path)
    for frag in fragments:
        assert frag in str(info.value), str(info.value)
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize("gz", [False, True])
def test_bad_magic(tmp_path: Path, gz: bool) -> None:
    data = b"\x01\x02" + good_bytes()[2:]
    path = tmp_path / "bad-magic"
    path.write_bytes(gzip.compress(data) if gz else data)
    expect_error(path, "bad magic number", "0x0102", "--data-dir")


def test_text_file_is_not_idx(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not an IDX file")
    expect_error(path, "bad magic number")


def test_unknown_type_byte(tmp_path: Path) -> None:
    data = bytearray(good_bytes())
    data[2] = 0x0A
    path = tmp_path / "type.idx"
    path.write_bytes(bytes(data))
    expect_error(path, "unknown element type 0x0A")


def test_zero_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "nodims.idx"
    path.write_bytes(bytes([0, 0, 8, 0]) + b"\x05")
    expect_error(path, "0 dimensions")


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload(tmp_path: Path, gz: bool) -> None:
    data = good_bytes()[:-5]
    path = tmp_path / ("short.gz" if gz else "short")
    path.write_bytes(gzip.compress(data) if gz else data)
    expect_error(path, "truncated", "needs 36 data bytes but only 31")


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "head.idx"
    path.write_bytes(good_bytes()[:9])
    expect_error(path, "truncated inside its header")


def test_too_short_for_header(tmp_path: Path) -> None:
    path = tmp_path / "tiny.idx"
    path.write_bytes(b"\x00\x00")
    expect_error(path, "too short")


@pytest.mark.parametrize("gz", [False, True])
def test_trailing_bytes(tmp_path: Path, gz: bool) -> None:
    data = good_bytes() + b"\x00\x01\x02"
    path = tmp_path / ("long.gz" if gz else "long")
    path.write_bytes(gzip.compress(data) if gz else data)
    expect_error(path, "3 unexpected bytes")


def test_gzip_header_then_junk(tmp_path: Path) -> None:
    header = gzip.compress(good_bytes())[:10]  # a valid 10-byte gzip member header
    path = tmp_path / "junk.gz"
    path.write_bytes(header + bytes(range(7, 250)))
    expect_error(path, "corrupt gzip")


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    packed = gzip.compress(sample(np.uint8, (50, 28, 28)).tobytes() + good_bytes())
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    expect_error(path, "truncated gzip stream")


def test_gzip_with_corrupt_crc(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(good_bytes()))
    packed[-8] ^= 0xFF  # CRC32 of the member
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(packed))
    expect_error(path, "corrupt gzip")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.idx", "does not exist")
    expect_error(tmp_path, "is a directory")


# --- pairs ---------------------------------------------------------------------------------

def test_pair_ok(tmp_path: Path) -> None:
    imgs, labs = sample(np.uint8, (6, 4, 4)), np.arange(6, dtype=np.uint8)
    write_idx(tmp_path / "i.gz", imgs)
    write_idx(tmp_path / "l.gz", labs)
    a, b = read_idx_pair(tmp_path / "i.gz", tmp_path / "l.gz")
    np.testing.assert_array_equal(a, imgs)
    np.testing.assert_array_equal(b, labs)


def test_pair_count_mismatch_names_both_files(tmp_path: Path) -> None:
    write_idx(tmp_path / "imgs.gz", sample(np.uint8, (6, 4, 4)))
    write_idx(tmp_path / "labs.gz", np.arange(5, dtype=np.uint8))
    with pytest.raises(IDXError) as info:
        read_idx_pair(tmp_path / "imgs.gz", tmp_path / "labs.gz")
    msg = str(info.value)
    assert str(tmp_path / "imgs.gz") in msg and str(tmp_path / "labs.gz") in msg
    assert "6 images" in msg and "5 labels" in msg


def test_pair_wrong_roles(tmp_path: Path) -> None:
    write_idx(tmp_path / "imgs.gz", sample(np.uint8, (6, 4, 4)))
    write_idx(tmp_path / "labs.gz", np.arange(6, dtype=np.uint8))
    write_idx(tmp_path / "float.gz", np.zeros((6, 4, 4), dtype=np.float32))
    with pytest.raises(IDXError, match=re.escape(str(tmp_path / "labs.gz")) + ".*3-D ubyte"):
        read_idx_pair(tmp_path / "labs.gz", tmp_path / "imgs.gz")
    with pytest.raises(IDXError, match=re.escape(str(tmp_path / "float.gz")) + ".*float32"):
        read_idx_pair(tmp_path / "float.gz", tmp_path / "labs.gz")
    with pytest.raises(IDXError, match=re.escape(str(tmp_path / "imgs.gz")) + ".*1-D ubyte"):
        read_idx_pair(tmp_path / "imgs.gz", tmp_path / "imgs.gz")


def test_write_rejects_unsupported(tmp_path: Path) -> None:
    with pytest.raises(IDXError, match="uint16"):
        write_idx(tmp_path / "x.gz", np.zeros(3, dtype=np.uint16))
    with pytest.raises(IDXError, match="1 to 255 dimensions"):
        write_idx(tmp_path / "x.gz", np.uint8(3))
    assert not (tmp_path / "x.gz").exists()
