"""load_image: user pictures become MNIST-like uint8 tensors; bad files raise ImageError."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from convlens.data import load_image
from convlens.data.images import border_is_brighter
from convlens.errors import ConfigError, ImageError


def bar_on_white(path: Path, fmt: str = "PNG") -> Path:
    """40 wide × 80 tall white page with a black bar centred on it (x 16..23, y 10..69)."""
    img = Image.new("L", (40, 80), 255)
    ImageDraw.Draw(img).rectangle([16, 10, 23, 69], fill=0)
    img.save(path, fmt)
    return path


def test_black_digit_on_white_is_inverted_resized_and_centred(tmp_path: Path) -> None:
    x = load_image(bar_on_white(tmp_path / "bar.png"))
    assert x.dtype == torch.uint8 and tuple(x.shape) == (1, 1, 28, 28)
    a = x[0, 0].numpy().astype(np.float64)
    # Scale min(28/80, 28/40) = 0.35 -> 14×28 content, pasted at column 7.
    assert (a[:, :7] == 0).all() and (a[:, 21:] == 0).all()  # padding is black
    assert a[0, 7] == 0 and a[27, 20] == 0  # page background became black
    # The bar spans x 12.6..15.4 and y 3.5..24.5 after scaling: fully covered pixels are bright.
    assert (a[5:23, 13:15] >= 240).all()
    assert a.max() <= 255
    rows, cols = np.indices(a.shape)
    cy, cx = (rows * a).sum() / a.sum(), (cols * a).sum() / a.sum()
    assert abs(cy - 13.5) < 0.3 and abs(cx - 13.5) < 0.3


def test_a_drawn_seven(tmp_path: Path) -> None:
    img = Image.new("L", (120, 120), 250)
    draw = ImageDraw.Draw(img)
    draw.line([(25, 20), (95, 20)], fill=10, width=10)  # top stroke
    draw.line([(95, 20), (50, 105)], fill=10, width=10)  # diagonal
    img.save(tmp_path / "seven.png")
    a = load_image(tmp_path / "seven.png")[0, 0].numpy()
    assert a[:2].max() <= 10 and a[:, :2].max() <= 10  # black border
    top_row = a[4:6, 7:22]  # the top stroke at y≈20/120*28≈4.7
    assert top_row.max() >= 200
    assert a[24:, :6].max() <= 10  # bottom left stays empty


def test_exact_when_no_resizing_is_needed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    page = np.full((28, 28), 255, np.uint8)
    page[6:22, 6:22] = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(page).save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")[0, 0].numpy()
    np.testing.assert_array_equal(out, 255 - page)
    # Already white-on-black: auto keeps it as is.
    Image.fromarray(255 - page).save(tmp_path / "q.png")
    np.testing.assert_array_equal(load_image(tmp_path / "q.png")[0, 0].numpy(), 255 - page)
    # Forced either way.
    np.testing.assert_array_equal(load_image(tmp_path / "p.png", invert=False)[0, 0].numpy(), page)
    np.testing.assert_array_equal(load_image(tmp_path / "q.png", invert=True)[0, 0].numpy(), page)


def test_not_inverted_page_is_padded_with_its_own_background(tmp_path: Path) -> None:
    a = load_image(bar_on_white(tmp_path / "bar.png"), invert=False)[0, 0].numpy()
    assert (a[:, :7] == 255).all() and (a[:, 21:] == 255).all()
    assert (a[5:23, 13:15] <= 15).all()


def test_rgb_and_other_sizes(tmp_path: Path) -> None:
    img = Image.new("RGB", (30, 30), (255, 255, 255))
    ImageDraw.Draw(img).rectangle([10, 10, 19, 19], fill=(255, 0, 0))
    img.save(tmp_path / "red.png")
    x = load_image(tmp_path / "red.png", size=(32, 32), channels=3)
    assert tuple(x.shape) == (1, 3, 32, 32)
    assert x[0, :, 16, 16].tolist() == [0, 255, 255]  # inverted red is cyan
    assert x[0, :, 1, 1].tolist() == [0, 0, 0]
    g = load_image(tmp_path / "red.png", size=(20, 10))
    assert tuple(g.shape) == (1, 1, 20, 10)


def test_transparency_and_jpeg(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (28, 28), (0, 0, 0, 0))  # transparent black page
    ImageDraw.Draw(rgba).rectangle([12, 4, 15, 23], fill=(0, 0, 0, 255))  # opaque black stroke
    rgba.save(tmp_path / "t.png")
    a = load_image(tmp_path / "t.png")[0, 0].numpy()
    assert (a[4:24, 12:16] == 255).all() and a[:, :10].max() == 0
    j = load_image(bar_on_white(tmp_path / "bar.jpg", "JPEG"))[0, 0].numpy()
    assert j[:, :6].max() <= 20 and j[8:20, 13:15].min() >= 200


def test_border_rule() -> None:
    page = np.full((20, 20), 200, np.uint8)
    page[8:12, 8:12] = 0
    assert border_is_brighter(page)
    assert not border_is_brighter(255 - page)
    assert not border_is_brighter(np.full((20, 20), 7, np.uint8))


@pytest.mark.parametrize("content", [b"just some text\n", b""])
def test_text_file_is_an_image_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "digit.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=re.escape(str(path)) + ".*not an image"):
        load_image(path)


def test_missing_directory_and_truncated(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=re.escape(str(tmp_path / "nope.png")) + ".*does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)
    full = bar_on_white(tmp_path / "bar.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(full[: len(full) // 2])
    with pytest.raises(ImageError, match=re.escape(str(tmp_path / "cut.png"))):
        load_image(tmp_path / "cut.png")


def test_bad_arguments(tmp_path: Path) -> None:
    path = bar_on_white(tmp_path / "bar.png")
    with pytest.raises(ConfigError, match="channels"):
        load_image(path, channels=2)
    with pytest.raises(ConfigError, match="size"):
        load_image(path, size=(0, 28))
    with pytest.raises(ConfigError, match="invert"):
        load_image(path, invert="yes")  # type: ignore[arg-type]
