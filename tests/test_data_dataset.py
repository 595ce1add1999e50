"""In-memory datasets: the real offline MNIST copy, batching, lookups, and random_shift
against a per-sample loop."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from convlens.data import ImageDataset, Source, load_dataset, normalise, random_shift, write_idx
from convlens.data.sources import STANDARD_FILES
from convlens.errors import ConfigError, DataError


def raw_idx(path: Path, header: int) -> np.ndarray:
    data = path.read_bytes()
    return np.frombuffer(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data, dtype=np.uint8)[header:]


def mnist_file(folder: Path, key: str) -> Path:
    name = STANDARD_FILES[key]
    return folder / name if (folder / name).exists() else folder / name.removesuffix(".gz")


@pytest.fixture(scope="module")
def mnist_test(mnist_dir: Path) -> ImageDataset:
    return load_dataset("mnist", "test", data_dir=mnist_dir)


# --- the real offline copy --------------------------------------------------------------------


@pytest.mark.parametrize(("split", "n"), [("train", 7500), ("test", 1500)])
def test_offline_mnist_via_data_dir(mnist_dir: Path, split: str, n: int) -> None:
    ds = load_dataset("mnist", split, data_dir=mnist_dir)
    assert len(ds) == n and ds.split == split and ds.name == "mnist"
    assert ds.images.dtype == torch.uint8 and tuple(ds.images.shape) == (n, 1, 28, 28)
    assert ds.labels.dtype == torch.int64 and tuple(ds.labels.shape) == (n,)
    assert set(ds.labels.tolist()) == set(range(10))
    assert ds.classes == tuple("0123456789") and ds.mean == (0.1307,) and ds.std == (0.3081,)
    key = "train" if split == "train" else "test"
    assert ds.source == str(mnist_file(mnist_dir, f"{key}_images").resolve())  # absolute, wherever it ran
    # Oracle: the bytes after the 16-byte (images) / 8-byte (labels) headers.
    np.testing.assert_array_equal(ds.images.numpy().reshape(-1), raw_idx(mnist_file(mnist_dir, f"{key}_images"), 16))
    np.testing.assert_array_equal(ds.labels.numpy(), raw_idx(mnist_file(mnist_dir, f"{key}_labels"), 8))


def test_offline_mnist_via_env(mnist_dir: Path, mnist_test: ImageDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVLENS_DATA_DIR", str(mnist_dir))
    ds = load_dataset("mnist", "test")
    assert len(ds) == 1500
    assert torch.equal(ds.images, mnist_test.images) and torch.equal(ds.labels, mnist_test.labels)


def test_missing_data_dir_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "train", data_dir=tmp_path / "absent")
    msg = str(info.value)
    assert str(tmp_path / "absent") in msg and "does not exist" in msg and "download" in msg


def test_unknown_name_and_split(mnist_dir: Path) -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'mnst'.*did you mean 'mnist'"):
        load_dataset("mnst", data_dir=mnist_dir)
    with pytest.raises(DataError, match=r"unknown split 'tset'.*did you mean 'test'"):
        load_dataset("mnist", "tset", data_dir=mnist_dir)


def test_label_outside_classes_is_rejected(tmp_path: Path) -> None:
    for key, arr in {"train_images": np.zeros((3, 4, 4), np.uint8), "train_labels": np.array([0, 10, 2], np.uint8),
                     "test_images": np.zeros((1, 4, 4), np.uint8), "test_labels": np.array([0], np.uint8)}.items():
        write_idx(tmp_path / STANDARD_FILES[key], arr)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz has label 10 but MNIST has 10 classes"):
        load_dataset("mnist", "train", data_dir=tmp_path)


def test_missing_constants_are_computed_from_training_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    train = rng.integers(0, 256, (30, 6, 6), dtype=np.uint8)
    arrays = {"train_images": train, "train_labels": rng.integers(0, 3, 30, dtype=np.uint8),
              "test_images": rng.integers(0, 256, (8, 6, 6), dtype=np.uint8),
              "test_labels": rng.integers(0, 3, 8, dtype=np.uint8)}
    for key, arr in arrays.items():
        write_idx(tmp_path / STANDARD_FILES[key], arr)
    src = Source(name="nostats", title="No stats", classes=("a", "b", "c"), urls=("http://127.0.0.1:9/",),
                 checksums={}, mean=None, std=None)
    expected_mean = train.astype(np.float64).mean() / 255
    expected_std = (train.astype(np.float64) / 255).std()
    for split in ("train", "test"):  # the test split is normalised with training statistics
        ds = load_dataset(src, split, data_dir=tmp_path)
        assert ds.mean[0] == pytest.approx(expected_mean, rel=1e-12)
        assert ds.std[0] == pytest.approx(expected_std, rel=1e-12)


# --- normalise and batches --------------------------------------------------------------------


def indexed_dataset(n: int = 103, c: int = 1) -> ImageDataset:
    """Image i carries i in its first two pixels, label i, so order can be read back."""
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (n, c, 5, 4), dtype=np.uint8))
    images[:, 0, 0, 0] = torch.arange(n) % 256
    images[:, 0, 0, 1] = torch.arange(n) // 256
    return ImageDataset(images=images, labels=torch.arange(n), classes=tuple(str(i) for i in range(n)),
                        name="indexed", split="train", source="memory",
                        mean=tuple(0.1 * (k + 1) for k in range(c)), std=tuple(0.2 + 0.1 * k for k in range(c)))


def manual_normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    arr = x.numpy().astype(np.float64) / 255.0
    m = np.asarray(mean).reshape(-1, 1, 1)
    s = np.asarray(std).reshape(-1, 1, 1)
    return (arr - m) / s


def test_normalise_matches_manual_per_channel() -> None:
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (4, 3, 6, 7), dtype=np.uint8))
    mean, std = (0.2, 0.4, 0.6), (0.3, 0.2, 0.1)
    y = normalise(x, mean, std)
    assert y.dtype == torch.float32 and y.device == x.device
    np.testing.assert_allclose(y.numpy(), manual_normalise(x, mean, std), rtol=1e-5, atol=1e-5)
    xf = x.float()
    normalise(xf, mean, std)
    assert torch.equal(xf, x.float())  # input untouched
    with pytest.raises(DataError, match="3 channels"):
        normalise(x, (0.1,), (0.2,))


@pytest.mark.parametrize("batch_size", [1, 10, 103, 500])
def test_every_index_once_per_epoch(batch_size: int) -> None:
    ds = indexed_dataset()
    seen = []
    sizes = []
    for x, y in ds.batches(batch_size, shuffle=True, generator=torch.Generator().manual_seed(3)):
        idx = y.numpy()
        decoded = np.rint((x[:, 0, 0, 0].numpy() * ds.std[0] + ds.mean[0]) * 255).astype(int)
        decoded += 256 * np.rint((x[:, 0, 0, 1].numpy() * ds.std[0] + ds.mean[0]) * 255).astype(int)
        np.testing.assert_array_equal(decoded, idx)  # images travel with their labels
        seen.extend(idx.tolist())
        sizes.append(len(idx))
    assert sorted(seen) == list(range(103))
    assert sizes == [min(batch_size, 103 - s) for s in range(0, 103, batch_size)]


def test_shuffle_order_is_one_randperm_per_epoch_and_seeded() -> None:
    ds = indexed_dataset()

    def order(seed: int) -> list[int]:
        return torch.cat([y for _, y in ds.batches(16, shuffle=True, generator=torch.Generator().manual_seed(seed))]).tolist()

    assert order(7) == order(7) == torch.randperm(103, generator=torch.Generator().manual_seed(7)).tolist()
    assert order(7) != order(8)
    gen = torch.Generator().manual_seed(7)
    first = torch.cat([y for _, y in ds.batches(16, shuffle=True, generator=gen)])
    second = torch.cat([y for _, y in ds.batches(16, shuffle=True, generator=gen)])
    assert not torch.equal(first, second)  # the generator advances between epochs
    unshuffled = torch.cat([y for _, y in ds.batches(16)])
    assert unshuffled.tolist() == list(range(103))


def test_batches_values_drop_last_and_multichannel() -> None:
    ds = indexed_dataset(n=50, c=3)
    got = list(ds.batches(16, drop_last=True, device="cpu"))
    assert [len(y) for _, y in got] == [16, 16, 16]
    for b, (x, y) in enumerate(got):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        expected = manual_normalise(ds.images[b * 16:(b + 1) * 16], ds.mean, ds.std)
        np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_augment_sees_uint8_before_normalisation() -> None:
    ds = indexed_dataset(n=20)
    dtypes = []

    def invert(xb: torch.Tensor) -> torch.Tensor:
        dtypes.append(xb.dtype)
        return 255 - xb

    x, _ = next(iter(ds.batches(20, augment=invert)))
    assert dtypes == [torch.uint8]
    np.testing.assert_allclose(x.numpy(), manual_normalise(255 - ds.images, ds.mean, ds.std), rtol=1e-5, atol=1e-5)
    assert torch.equal(ds.images, indexed_dataset(n=20).images)  # dataset untouched


def test_bad_batch_size() -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        indexed_dataset().batches(0)


# --- lookups ----------------------------------------------------------------------------------


def test_index_of_matches_numpy(mnist_test: ImageDataset) -> None:
    labels = mnist_test.labels.numpy()
    for digit in range(10):
        hits = np.flatnonzero(labels == digit)
        assert mnist_test.index_of(digit) == hits[0]
        assert mnist_test.index_of(str(digit), nth=3) == hits[3]
        assert mnist_test.index_of(digit, nth=len(hits) - 1) == hits[-1]
    n7 = int((labels == 7).sum())
    with pytest.raises(DataError, match=rf"has {n7} examples of digit 7; nth={n7} must be in 0..{n7 - 1}"):
        mnist_test.index_of(7, nth=n7)


def test_index_of_absent_and_unknown(mnist_test: ImageDataset) -> None:
    no_sevens = mnist_test.subset(np.flatnonzero(mnist_test.labels.numpy() != 7))
    with pytest.raises(DataError, match=r"no digit 7 in mnist test \(1\d{3} images\)"):
        no_sevens.index_of(7)
    with pytest.raises(DataError, match=r"digit 12 does not exist in mnist: labels run 0..9"):
        mnist_test.index_of(12)
    with pytest.raises(DataError, match="unknown digit 'seven'"):
        mnist_test.index_of("seven")


def test_item_and_bad_index(mnist_test: ImageDataset) -> None:
    x, label = mnist_test.item(42)
    assert tuple(x.shape) == (1, 1, 28, 28) and x.dtype == torch.float32
    assert label == int(mnist_test.labels[42])
    np.testing.assert_allclose(x.numpy(), manual_normalise(mnist_test.images[42:43], (0.1307,), (0.3081,)),
                               rtol=1e-5, atol=1e-5)
    for bad in (1500, -1, 10**9):
        with pytest.raises(DataError, match=r"out of range for mnist test: valid indices are 0..1499"):
            mnist_test.item(bad)
    with pytest.raises(DataError, match="must be an integer"):
        mnist_test.item("3")  # type: ignore[arg-type]


def test_subset_keeps_order_and_metadata(mnist_test: ImageDataset) -> None:
    idx = [5, 0, 1499, 5]
    sub = mnist_test.subset(idx)
    assert len(sub) == 4 and sub.mean == mnist_test.mean and sub.classes == mnist_test.classes
    assert torch.equal(sub.images, mnist_test.images[idx]) and torch.equal(sub.labels, mnist_test.labels[idx])
    with pytest.raises(DataError, match="subset index 1500 is out of range"):
        mnist_test.subset([0, 1500])


def test_dataset_validates_its_fields() -> None:
    with pytest.raises(DataError, match="uint8 tensor"):
        ImageDataset(images=torch.zeros(2, 1, 3, 3), labels=torch.zeros(2, dtype=torch.int64), classes=("a",),
                     name="x", split="train", source="", mean=(0.0,), std=(1.0,))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        ImageDataset(images=torch.zeros(2, 1, 3, 3, dtype=torch.uint8), labels=torch.zeros(3, dtype=torch.int64),
                     classes=("a",), name="x", split="train", source="", mean=(0.0,), std=(1.0,))


# --- random_shift -----------------------------------------------------------------------------


def shift_oracle(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Per-sample loop: out[n, :, i, j] = x[n, :, i - dy, j - dx], zero outside."""
    out = torch.zeros_like(x)
    _, _, h, w = x.shape
    for n, (dy, dx) in enumerate(shifts.tolist()):
        for i in range(h):
            for j in range(w):
                si, sj = i - dy, j - dx
                if 0 <= si < h and 0 <= sj < w:
                    out[n, :, i, j] = x[n, :, si, sj]
    return out


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize(("shape", "m"), [((9, 2, 5, 7), 1), ((12, 1, 6, 6), 3), ((4, 3, 3, 4), 5)])
def test_random_shift_equals_per_sample_loop(dtype: torch.dtype, shape: tuple[int, int, int, int], m: int) -> None:
    x = torch.randint(1, 256, shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    before = x.clone()
    out = random_shift(x, m, torch.Generator().manual_seed(11))
    shifts = torch.randint(-m, m + 1, (shape[0], 2), generator=torch.Generator().manual_seed(11))
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.equal(out, shift_oracle(x, shifts))
    assert torch.equal(x, before)
    assert shifts.abs().max() > 0  # the case really shifts something


def test_random_shift_is_deterministic_and_varied() -> None:
    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = random_shift(x, 2, torch.Generator().manual_seed(5))
    b = random_shift(x, 2, torch.Generator().manual_seed(5))
    c = random_shift(x, 2, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(random_shift(x, 0, torch.Generator()), x)
    with pytest.raises(ConfigError, match=">= 0"):
        random_shift(x, -1)
    with pytest.raises(ConfigError, match="N×C×H×W"):
        random_shift(x[0], 1)
