"""Image folders (``folder:PATH``): layout, splits, decoding against Pillow, resizing and
centre-cropping, gray <-> RGB, mean/std, the cached index, the streamed dataset, and one
clear line for every bad input with nothing left in the cache."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _data_beds import colour_images, write_folder
from convlens.data import ImageDataset, load_dataset
from convlens.data.folder import index_folder
from convlens.data.stream import StreamingDataset
from convlens.errors import ConvlensError

CLASSES = ["blue", "green", "red"]  # sorted, as the folder's class names come out


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVLENS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray, list[Path]]:
    root = tmp_path_factory.mktemp("folder") / "photos"
    images, labels = colour_images(10, size=32)
    # labels 0, 1, 2 are red, green, blue squares; the folders sort as blue, green, red
    names = ["red", "green", "blue"]
    paths = write_folder(root, images, labels, names)
    return root, images, np.array([CLASSES.index(names[y]) for y in labels]), paths


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)


def _index_files() -> list[Path]:
    d = Path(os.environ["CONVLENS_CACHE_DIR"]) / "folder-index"
    return sorted(d.iterdir()) if d.exists() else []


def test_a_folder_loads_with_class_names_from_its_sub_folders(bed: tuple) -> None:
    root, _, labels, paths = bed
    train, test = load_dataset(f"folder:{root}", "train"), load_dataset(f"folder:{root}", "test")
    assert isinstance(train, ImageDataset) and train.classes == tuple(CLASSES)
    assert train.shape == (3, 32, 32) and train.images.dtype == torch.uint8
    assert train.name == f"folder:{root.resolve()}" and train.split == "train"
    # a seeded per-class fifth is the test split: 2 of each class's 10
    assert len(test) == 6 and len(train) == 24
    assert torch.bincount(test.labels, minlength=3).tolist() == [2, 2, 2]
    # pixels exactly as Pillow decodes each file; the two splits partition the folder
    by_path = {str(p.relative_to(root)): (_pixels(p), labels[i]) for i, p in enumerate(paths)}
    seen = 0
    for ds in (train, test):
        for i in range(len(ds)):
            matches = [k for k, (px, y) in by_path.items() if y == int(ds.labels[i]) and np.array_equal(px, ds.images[i].numpy())]
            assert len(matches) == 1
            by_path.pop(matches[0])
            seen += 1
    assert seen == 30 and not by_path
    # the same seed gives the same split, another seed another one
    again = load_dataset(f"folder:{root}", "test")
    assert torch.equal(again.images, test.images)
    other = load_dataset(f"folder:{root}?seed=1", "test")
    assert not torch.equal(other.images, test.images)
    assert other.name == f"folder:{root.resolve()}?seed=1"


def test_mean_and_std_are_the_training_splits_or_given(bed: tuple) -> None:
    root = bed[0]
    train, test = load_dataset(f"folder:{root}", "train"), load_dataset(f"folder:{root}", "test")
    x = train.images.numpy().astype(np.float64) / 255.0  # NumPy float64 oracle
    assert np.allclose(train.mean, x.mean(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    assert np.allclose(train.std, x.std(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    assert test.mean == train.mean and test.std == train.std
    given = load_dataset(f"folder:{root}", "test", mean=(0.5,), std="0.25,0.5,1")
    assert given.mean == (0.5, 0.5, 0.5) and given.std == (0.25, 0.5, 1.0)
    xb, _ = next(given.batches(len(given)))
    want = (given.images.double() / 255 - 0.5) / torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64).view(3, 1, 1)
    assert torch.allclose(xb.double(), want, atol=1e-6)


def test_train_and_test_sub_folders_are_the_split(tmp_path: Path) -> None:
    images, labels = colour_images(3, size=12)
    write_folder(tmp_path / "d" / "train", images[:6], labels[:6], ["r", "g", "b"])
    write_folder(tmp_path / "d" / "test", images[6:], labels[6:], ["r", "g", "b"])
    train, test = load_dataset(f"folder:{tmp_path / 'd'}", "train"), load_dataset(f"folder:{tmp_path / 'd'}", "test")
    assert train.classes == ("b", "g", "r") and len(train) == 6 and len(test) == 3
    assert sorted(test.images.reshape(3, -1).sum(1).tolist()) == sorted(
        torch.from_numpy(images[6:]).reshape(3, -1).sum(1).tolist())


def test_jpeg_webp_and_gray_rgb_conversion(tmp_path: Path) -> None:
    images, labels = colour_images(2, size=16)
    write_folder(tmp_path / "j", images, labels, ["a", "b", "c"], fmt="jpg")
    write_folder(tmp_path / "w", images, labels, ["a", "b", "c"], fmt="webp")
    jpg = load_dataset(f"folder:{tmp_path / 'j'}?test=0.5", "train")
    webp = load_dataset(f"folder:{tmp_path / 'w'}?test=0.5", "train")
    assert jpg.shape == webp.shape == (3, 16, 16)
    # lossless WebP decodes to the very pixels written; JPEG within its compression error
    assert {tuple(np.asarray(webp.images[i]).ravel()[:50]) for i in range(len(webp))} <= \
        {tuple(im.ravel()[:50]) for im in images}
    gray = load_dataset(f"folder:{tmp_path / 'w'}?test=0.5&channels=1", "train")
    assert gray.shape == (1, 16, 16)
    rgb = webp.images.numpy().astype(np.float64)
    luma = (rgb[:, 0] * 299 + rgb[:, 1] * 587 + rgb[:, 2] * 114) / 1000  # ITU-R 601-2, Pillow's "L"
    assert np.abs(gray.images.numpy()[:, 0] - luma).max() <= 1.0
    # a gray folder read as RGB repeats the gray channel
    write_folder(tmp_path / "g", gray.images.numpy(), gray.labels.numpy(), ["a", "b", "c"])
    as_rgb = load_dataset(f"folder:{tmp_path / 'g'}?test=0.5&channels=3", "train")
    assert load_dataset(f"folder:{tmp_path / 'g'}?test=0.5", "train").shape[0] == 1  # gray stays gray by default
    assert torch.equal(as_rgb.images[:, 0], as_rgb.images[:, 1]) and torch.equal(as_rgb.images[:, 1], as_rgb.images[:, 2])


def test_resize_covers_the_size_and_crops_the_centre(tmp_path: Path) -> None:
    # 30 wide, 10 high: left third red, centre third green, right third blue
    img = np.zeros((10, 30, 3), np.uint8)
    img[:, :10, 0] = 255
    img[:, 10:20, 1] = 255
    img[:, 20:, 2] = 255
    for cls in ("a", "b"):
        (tmp_path / "r" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(img).save(tmp_path / "r" / cls / f"{i}.png")
    ds = load_dataset(f"folder:{tmp_path / 'r'}?size=10&test=0.5", "train")
    assert ds.shape == (3, 10, 10)
    # scale max(10/10, 10/30) = 1: no resampling, the centre 10 columns are the green third
    assert (ds.images[:, 1] == 255).all() and (ds.images[:, 0] == 0).all() and (ds.images[:, 2] == 0).all()
    half = load_dataset(f"folder:{tmp_path / 'r'}?size=5x5&test=0.5", "train")
    assert half.shape == (3, 5, 5)
    assert (half.images[:, 1, :, 1:4] > 200).all() and (half.images[:, 0, :, 1:4] < 50).all()  # still green inside


def test_streamed_folder_is_the_same_data_as_in_memory(bed: tuple) -> None:
    root = bed[0]
    mem = load_dataset(f"folder:{root}", "train", stream=False)
    st = load_dataset(f"folder:{root}", "train", stream=True)
    assert isinstance(st, StreamingDataset) and isinstance(mem, ImageDataset)
    assert (len(st), st.shape, st.classes, st.mean, st.std) == (len(mem), mem.shape, mem.classes, mem.mean, mem.std)
    assert torch.equal(st.labels, mem.labels)
    for shuffle in (False, True):
        a = list(mem.batches(7, shuffle=shuffle, generator=torch.Generator().manual_seed(3), drop_last=True))
        b = list(st.batches(7, shuffle=shuffle, generator=torch.Generator().manual_seed(3), drop_last=True))
        assert len(a) == len(b) == 3
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    x, y = st.item(5)
    assert torch.equal(x, mem.item(5)[0]) and y == mem.item(5)[1]
    sub = st.subset([4, 1, 9])
    assert isinstance(sub, StreamingDataset) and torch.equal(sub.images[0:3], mem.subset([4, 1, 9]).images)
    assert torch.equal(st.images[torch.tensor([2, 0])], mem.images[torch.tensor([2, 0])])
    assert st.index_of(1, 2) == mem.index_of(1, 2)
    # a budget smaller than the split streams it; a large one keeps it in memory
    assert isinstance(load_dataset(f"folder:{root}?budget=1000", "train"), StreamingDataset)
    assert isinstance(load_dataset(f"folder:{root}", "train", budget="1GB"), ImageDataset)
    # it pickles as its index (no pixels) and streams the same after a round trip
    blob = pickle.dumps(st.subset(range(8, 16)))
    assert len(blob) < 32 * 32 * 3 * 8
    back = pickle.loads(blob)
    assert torch.equal(next(back.batches(8))[0], next(mem.subset(range(8, 16)).batches(8))[0])
    assert torch.equal(st.images[:], mem.images)


def test_the_index_is_cached_and_follows_the_folder(tmp_path: Path) -> None:
    images, labels = colour_images(3, size=8)
    paths = write_folder(tmp_path / "f", images, labels, ["r", "g", "b"])
    first = load_dataset(f"folder:{tmp_path / 'f'}?test=0.4", "train", stream=True)
    assert len(_index_files()) == 1 and len(first) == 6
    # changed content under the same name: the index sees the new size/mtime and reads it again
    new = np.full((8, 8, 3), 255, np.uint8)
    target = paths[0]
    Image.fromarray(new).save(target)
    st = os.stat(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = load_dataset(f"folder:{tmp_path / 'f'}?test=0.4", "train", stream=True)
    full = torch.cat([again.images[:], load_dataset(f"folder:{tmp_path / 'f'}?test=0.4", "test").images])
    assert (full.reshape(len(full), -1) == 255).all(dim=1).sum() == 1
    assert again.mean != first.mean
    # an added image joins the index
    Image.fromarray(new).save(tmp_path / "f" / "g" / "extra.png")
    assert len(index_folder(tmp_path / "f")) == 10


def _bad(root: Path, fragment: str) -> str:
    with pytest.raises(ConvlensError) as info:
        load_dataset(f"folder:{root}", "train")
    line = str(info.value)
    assert "\n" not in line and fragment in line, line
    assert _index_files() == []  # nothing half-written in the cache
    return line


def _good(root: Path, n: int = 2) -> None:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / cls / f"{i}.png")


def test_a_corrupt_image_names_the_file(tmp_path: Path) -> None:
    _good(tmp_path / "c")
    bad = tmp_path / "c" / "a" / "broken.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:60])  # the header survives, the pixel data does not
    line = _bad(tmp_path / "c", str(bad))
    assert "corrupt" in line


def test_a_file_that_is_not_an_image_names_the_file(tmp_path: Path) -> None:
    _good(tmp_path / "n")
    fake = tmp_path / "n" / "b" / "notes.png"
    fake.write_text("not a picture")
    assert "not an image" in _bad(tmp_path / "n", str(fake))
    fake.unlink()
    other = tmp_path / "n" / "b" / "notes.txt"
    other.write_text("a note")
    assert "not an image" in _bad(tmp_path / "n", str(other))


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    _good(tmp_path / "b")
    bomb = tmp_path / "b" / "a" / "bomb.png"
    Image.new("1", (12_000, 8_000)).save(bomb)  # 96 megapixels in a few kB
    assert bomb.stat().st_size < 100_000
    line = _bad(tmp_path / "b", str(bomb))
    assert "12000×8000" in line and "decompression bomb" in line


def test_an_empty_class_folder_names_the_folder(tmp_path: Path) -> None:
    _good(tmp_path / "e")
    (tmp_path / "e" / "zebra").mkdir()
    assert "holds no images" in _bad(tmp_path / "e", str(tmp_path / "e" / "zebra"))


def test_mixed_sizes_without_a_resize_name_the_file_and_the_fix(tmp_path: Path) -> None:
    _good(tmp_path / "m", 3)
    odd = tmp_path / "m" / "b" / "wide.png"
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(odd)
    line = _bad(tmp_path / "m", str(odd))
    assert "12×8" in line and "8×8" in line and "size=8x8" in line
    ds = load_dataset(f"folder:{tmp_path / 'm'}?size=8", "train")  # the fix it names works
    assert ds.shape == (3, 8, 8)


def test_bad_specs_and_options_are_one_line(tmp_path: Path) -> None:
    for spec, fragment in (
        (f"folder:{tmp_path / 'missing'}", "does not exist"),
        ("folder:", "names no path"),
        (f"folder:{tmp_path}?size=0", "size=0"),
        (f"folder:{tmp_path}?colour=1", "colour"),
        (f"folder:{tmp_path}?test=1.5", "fraction between 0 and 1"),
        ("cifar11", "cifar10"),
    ):
        with pytest.raises(ConvlensError) as info:
            load_dataset(spec, "train")
        assert fragment in str(info.value) and "\n" not in str(info.value), (spec, str(info.value))
    with pytest.raises(ConvlensError, match="options of folder:"):
        load_dataset("mnist", "train", size=32)


def test_a_streamed_split_decodes_nothing_until_its_images_are_read(bed: tuple,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = bed[0]
    load_dataset(f"folder:{root}", "train", stream=True)
    import convlens.data.folder as folder

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(folder, "read_image", refuse)
    st = load_dataset(f"folder:{root}", "test", stream=True)
    assert len(st) == 6 and st.fingerprint().n == 6 and st.labels.shape == (6,)
    assert st.pixel_stats()[0] != st.mean  # the test split's own statistics, from the index
