"""NumPy arrays (``npz:PATH``): both-splits and one-set ``.npz`` files, ``.npy`` with its
labels, channel layouts, float pixels, and refusals (pickles, bad shapes and labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _data_beds import colour_images
from convlens.data import load_dataset
from convlens.errors import ConvlensError


def test_keras_style_npz_with_channels_last(tmp_path: Path) -> None:
    x, y = colour_images(4, size=32)
    p = tmp_path / "c.npz"
    np.savez(p, x_train=x[:9].transpose(0, 2, 3, 1), y_train=y[:9], x_test=x[9:].transpose(0, 2, 3, 1),
             y_test=y[9:], classes=np.array(["red", "green", "blue"]))
    train, test = load_dataset(f"npz:{p}", "train"), load_dataset(f"npz:{p}", "test")
    assert train.shape == (3, 32, 32) and len(train) == 9 and len(test) == 3
    assert np.array_equal(train.images.numpy(), x[:9]) and np.array_equal(test.labels.numpy(), y[9:])
    assert train.classes == ("red", "green", "blue") and train.name == f"npz:{p.resolve()}"
    f = x[:9].astype(np.float64) / 255
    assert np.allclose(test.mean, f.mean(axis=(0, 2, 3)), atol=1e-12)
    assert np.allclose(test.std, f.std(axis=(0, 2, 3)), atol=1e-12)


def test_one_set_is_split_by_a_seeded_fraction(tmp_path: Path) -> None:
    x, y = colour_images(10, size=8)
    p = tmp_path / "one.npz"
    np.savez(p, images=x, labels=y)
    train, test = load_dataset(f"npz:{p}?test=0.3", "train"), load_dataset(f"npz:{p}?test=0.3", "test")
    assert len(train) == 21 and len(test) == 9
    assert torch.bincount(test.labels).tolist() == [3, 3, 3]
    both = torch.cat([train.images, test.images]).reshape(30, -1)
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, x.reshape(30, -1).tolist()))
    assert train.classes == ("0", "1", "2")


def test_npy_with_labels_beside_it_and_float_pixels(tmp_path: Path) -> None:
    x, y = colour_images(5, size=8)
    gray = x[:, 0]  # N×H×W
    np.save(tmp_path / "images.npy", gray.astype(np.float32) / 255)
    np.save(tmp_path / "labels.npy", y)
    train = load_dataset(f"npz:{tmp_path / 'images.npy'}", "train")
    assert train.shape == (1, 8, 8)
    assert {tuple(r) for r in train.images.reshape(len(train), -1).tolist()} <= {tuple(r) for r in gray.reshape(15, -1).tolist()}
    np.save(tmp_path / "other.npy", y)
    assert len(load_dataset(f"npz:{tmp_path / 'images.npy'}?labels={tmp_path / 'other.npy'}", "test")) == 3


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda p: np.save(p.with_suffix(".npy"), np.array([{"a": 1}], dtype=object), allow_pickle=True), "Python objects"),
    (lambda p: np.savez(p, images=np.zeros((4, 5, 5, 5), np.uint8), labels=np.zeros(4, np.int64)), "1 or 3 channels"),
    (lambda p: np.savez(p, images=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(3, np.int64)), "3 labels for 4 images"),
    (lambda p: np.savez(p, images=np.full((4, 5, 5), 2.0), labels=np.zeros(4, np.int64)), "outside [0, 1]"),
    (lambda p: np.savez(p, pictures=np.zeros((4, 5, 5), np.uint8)), "holds ['pictures']"),
    (lambda p: p.write_text("not numpy"), "not a NumPy"),
])
def test_bad_arrays_are_one_line_naming_the_file(tmp_path: Path, make: object, fragment: str) -> None:
    p = tmp_path / "bad.npz"
    make(p)  # type: ignore[operator]
    target = p if p.exists() else p.with_suffix(".npy")
    if target.suffix == ".npy":
        np.save(tmp_path / "labels.npy", np.zeros(1, np.int64))
    with pytest.raises(ConvlensError) as info:
        load_dataset(f"npz:{target}", "train")
    line = str(info.value)
    assert fragment in line and str(target) in line and "\n" not in line, line
