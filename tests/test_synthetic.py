"""The test beds of convlens.data.synthetic against their definitions, pixel by pixel, and
the directories `convlens make-dataset` writes, read back through --data-dir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from _helpers import cli_call, mnist_full
from convlens.data import load_dataset, write_idx
from convlens.data.masks import foreground_masks
from convlens.data.synthetic import (
    colored_mnist,
    label_flip,
    load_masks,
    load_split,
    patch_mnist,
    patch_positions,
)
from convlens.errors import DataError, OutputError


def small_source(n_train: int = 400, n_test: int = 200) -> tuple:
    train, test = mnist_full()
    return train.subset(range(n_train)), test.subset(range(n_test))


def brute_masks(images: np.ndarray, threshold: int, dilation: int) -> np.ndarray:
    """Foreground by loops: any pixel within `dilation` (square) brighter than `threshold`."""
    bright = images.max(axis=1) > threshold
    _, h, w = bright.shape
    out = np.zeros_like(bright)
    for i in range(h):
        for j in range(w):
            out[:, i, j] = bright[:, max(0, i - dilation):i + dilation + 1, max(0, j - dilation):j + dilation + 1].any((1, 2))
    return out


@pytest.mark.parametrize("dilation", [0, 1, 2])
def test_foreground_masks_are_threshold_then_square_dilation(dilation: int) -> None:
    rng = np.random.default_rng(dilation)
    images = (rng.random((5, 3, 9, 11)) < 0.05).astype(np.uint8) * rng.integers(0, 256, (5, 3, 9, 11)).astype(np.uint8)
    got = foreground_masks(images, threshold=32, dilation=dilation)
    assert got.dtype == np.bool_ and got.shape == (5, 9, 11)
    assert np.array_equal(got, brute_masks(images, 32, dilation))
    assert np.array_equal(foreground_masks(torch.from_numpy(images[:, :1])), brute_masks(images[:, :1], 32, 2))


def test_patch_mnist_matches_its_definition() -> None:
    source = small_source()
    bed = patch_mnist(0.95, seed=3, source=source)
    pos = patch_positions()
    p = bed.details["patch"]
    train_orig = source[0].images.numpy()[:, 0]
    got = bed.train.images.numpy()[:, 0]
    labels = source[0].labels.numpy()
    aligned = 0
    for n in range(len(got)):
        where = [c for c, (r, q) in enumerate(pos) if (got[n, r:r + p, q:q + p] == 255).all()
                 and bed.masks["train-patch"][n, r:r + p, q:q + p].all()]
        assert len(where) == 1  # exactly one patch, at one of the ten positions
        r, q = pos[where[0]]
        expect = train_orig[n].copy()
        expect[r:r + p, q:q + p] = 255
        assert np.array_equal(got[n], expect)  # nothing else changed
        assert bed.masks["train-patch"][n].sum() == p * p
        aligned += where[0] == labels[n]
    assert aligned == bed.details["train_aligned"]
    assert 0.9 < aligned / len(got) <= 1.0
    # foreground: the clean digit's mask without the patch
    fg = foreground_masks(source[0].images) & ~bed.masks["train-patch"]
    assert np.array_equal(bed.masks["train-foreground"], fg)
    assert not (bed.masks["train-foreground"] & bed.masks["train-patch"]).any()
    # test splits: aligned at the label's position, conflicting never, none without patch
    yt = source[1].labels.numpy()
    for split, rule in (("test", lambda c, y: c == y), ("conflicting", lambda c, y: c != y)):
        ims = bed.splits[split].images.numpy()[:, 0]
        for n in range(len(ims)):
            cls = [c for c, (r, q) in enumerate(pos) if bed.masks[f"{split}-patch"][n, r, q]
                   and bed.masks[f"{split}-patch"][n, r + p - 1, q + p - 1]]
            assert len(cls) == 1 and rule(cls[0], yt[n])
    assert np.array_equal(bed.splits["none"].images, source[1].images)
    assert not bed.masks["none-patch"].any()


def test_patch_control_position_is_independent_of_the_label() -> None:
    bed = patch_mnist(0.1, seed=0, source=small_source(2000, 10))
    pos = patch_positions()
    pm = bed.masks["train-patch"]
    where = np.array([int(np.flatnonzero([pm[n, r, q] for r, q in pos])[0]) for n in range(len(pm))])
    labels = bed.train.labels.numpy()
    table = np.zeros((10, 10))
    np.add.at(table, (labels, where), 1)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    assert chi2 < 123.2  # the 0.999 quantile of chi-square with 81 degrees of freedom
    assert abs((where == labels).mean() - 0.1) < 0.03


def test_colored_mnist_is_arjovsky_style() -> None:
    source = small_source(1000, 400)
    bed = colored_mnist(seed=1, source=source)
    assert bed.train.classes == ("0-4", "5-9") and bed.train.shape == (3, 28, 28)
    for split, ds, e in (("train", source[0], None), ("test", source[1], 0.9)):
        x = bed.splits[split].images.numpy()
        gray = ds.images.numpy()[:, 0]
        colour = x[:, 1].any((1, 2)).astype(int)  # green present -> colour 1
        assert not x[:, 2].any()  # blue is black
        for n in range(len(x)):  # the digit in exactly its colour's channel, the other black
            assert np.array_equal(x[n, colour[n]], gray[n]) and not x[n, 1 - colour[n]].any()
        y = bed.splits[split].labels.numpy()
        digit_label = (ds.labels.numpy() >= 5).astype(int)
        assert abs((y != digit_label).mean() - 0.25) < 0.06  # label noise
        agree = (colour == y).mean()
        key = f"{split} e={e:g}" if e is not None else None
        if key:
            assert agree == pytest.approx(bed.details["colour_label_agreement"][key])
            assert abs(agree - 0.1) < 0.05
        else:
            env = bed.masks["train-env"]
            for i, ev in enumerate((0.1, 0.2)):
                assert abs((colour == y)[env == i].mean() - (1 - ev)) < 0.05
    assert np.array_equal(bed.masks["test-foreground"], foreground_masks(bed.test.images))


def test_label_flip_flips_exactly_k_labels_at_the_indices() -> None:
    source = small_source()
    bed = label_flip(30, seed=2, source=source)
    orig = source[1].labels.numpy()
    new = bed.test.labels.numpy()
    idx = bed.masks["test-flipped"]
    assert len(idx) == 30 and len(set(idx.tolist())) == 30
    assert np.array_equal(np.flatnonzero(new != orig), np.sort(idx))
    assert np.array_equal(bed.masks["test-original-labels"], orig)
    assert np.array_equal(bed.train.labels, source[0].labels)
    assert bed.details["flipped"] == idx.tolist()


def test_made_directories_read_back_through_data_dir(tmp_path: Path, mnist_dir: Path) -> None:
    source = small_source(300, 100)
    for bed in (patch_mnist(0.95, source=source), colored_mnist(source=source)):
        out = bed.save(tmp_path / bed.name)
        manifest = json.loads((out / "dataset.json").read_text())
        assert manifest["name"] == bed.name and manifest["based_on"] == "mnist"
        for split in ("train", "test"):
            for asked in ("mnist", bed.name):  # the default dataset name reads the made one
                ds = load_dataset(asked, split, data_dir=out)
                assert ds.name == bed.name and ds.classes == bed.train.classes
                assert torch.equal(ds.images, bed.splits[split].images)
                assert torch.equal(ds.labels, bed.splits[split].labels)
                assert ds.mean == pytest.approx(bed.train.mean) and ds.std == pytest.approx(bed.train.std)
        assert np.array_equal(load_masks(out, "test-foreground"), bed.masks["test-foreground"])
        with pytest.raises(DataError, match=f"holds .* not fashion-mnist; pass --dataset {bed.name}"):
            load_dataset("fashion-mnist", "test", data_dir=out)
        with pytest.raises(OutputError, match="already holds a convlens dataset; add --force"):
            bed.save(out)
    conflicting = load_split(tmp_path / "patch-mnist", "conflicting")
    assert torch.equal(conflicting.images, patch_mnist(0.95, source=source).splits["conflicting"].images)
    with pytest.raises(DataError, match=r"unknown dataset 'patch-mnist'.* holds no dataset\.json: for a dataset made by"):
        load_dataset("patch-mnist", "test", data_dir=mnist_dir)


def test_colour_idx_channels_last_is_read_as_channels_first(tmp_path: Path) -> None:
    from convlens.data import read_idx_pair

    x = np.random.default_rng(0).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    write_idx(tmp_path / "i.gz", x)
    write_idx(tmp_path / "l.gz", np.arange(4, dtype=np.uint8))
    images, _ = read_idx_pair(tmp_path / "i.gz", tmp_path / "l.gz")
    assert images.shape == (4, 3, 5, 6) and np.array_equal(images, x.transpose(0, 3, 1, 2))
    write_idx(tmp_path / "bad.gz", np.zeros((2, 5, 6, 7), np.uint8))
    with pytest.raises(DataError, match="neither N×C×H×W nor N×H×W×C"):
        read_idx_pair(tmp_path / "bad.gz", tmp_path / "l.gz")


def test_make_dataset_cli_writes_once(tmp_path: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "flip"
    code, stdout, _ = cli_call(capsys, "make-dataset", "label-flip", "--k", "7", "--out", str(out),
                               "--data-dir", str(mnist_dir))
    assert code == 0 and "7 test labels flipped" in stdout
    assert len(np.load(out / "test-flipped.npy")) == 7
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, _, err = cli_call(capsys, "make-dataset", "label-flip", "--out", str(out), "--data-dir", str(mnist_dir))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--force" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    code, _, err = cli_call(capsys, "make-dataset", "label-flip", "--out", str(tmp_path / "x"), "--data-dir", str(out))
    assert code == 1 and "made from MNIST" in err and not (tmp_path / "x").exists()
