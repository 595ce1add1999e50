"""Dataset sources: the registry, existing directories, and the download path against
a local HTTP server on 127.0.0.1 (never the real network)."""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from _data_beds import Server, serve
from convlens.data import SOURCES, Source, download, load_dataset, resolve_files, write_idx
from convlens.data.sources import FILE_KEYS, STANDARD_FILES, cache_dir
from convlens.errors import DataError, DownloadError

# --- the registry ---------------------------------------------------------------------------


def test_registry_contents() -> None:
    assert set(SOURCES) == {"mnist", "fashion-mnist", "kmnist"}
    assert SOURCES["mnist"].classes == tuple("0123456789")
    assert SOURCES["fashion-mnist"].classes == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert SOURCES["kmnist"].classes == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    assert SOURCES["mnist"].mean == (0.1307,) and SOURCES["mnist"].std == (0.3081,)
    for name, src in SOURCES.items():
        assert src.name == name
        assert dict(src.files) == dict(STANDARD_FILES)
        for fname in STANDARD_FILES.values():
            assert re.fullmatch(r"md5:[0-9a-f]{32}", src.checksum(fname) or ""), (name, fname)
        assert len(set(src.checksums.values())) == 4
        assert all(u.startswith(("http://", "https://")) and u.endswith("/") for u in src.urls)


def test_published_mnist_test_md5_matches_the_offline_copy_readme() -> None:
    # ../shared/data/mnist-9k/README.md quotes the official t10k-images md5 independently.
    assert SOURCES["mnist"].checksum("t10k-images-idx3-ubyte.gz") == "md5:9fb629c4189551a2d022fa330f9573f3"


# --- existing directories ---------------------------------------------------------------------


def test_resolve_from_data_dir(mnist_dir: Path) -> None:
    paths = resolve_files("mnist", mnist_dir)
    assert set(paths) == set(FILE_KEYS)
    for key, p in paths.items():
        assert p.parent == mnist_dir and p.is_file()
        assert p.name.removesuffix(".gz") == STANDARD_FILES[key].removesuffix(".gz")


def test_resolve_from_env(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVLENS_DATA_DIR", str(mnist_dir))
    assert resolve_files("mnist") == resolve_files("mnist", mnist_dir)


def tiny_files(folder: Path, n: int = 20, seed: int = 0, gz: bool = True) -> dict[str, np.ndarray]:
    """Write the four IDX files of a tiny dataset; return the arrays by role."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n // 2, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n // 2, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, arr in arrays.items():
        name = STANDARD_FILES[key] if gz else STANDARD_FILES[key].removesuffix(".gz")
        write_idx(folder / name, arr)
    return arrays


def test_subfolder_is_preferred_and_uncompressed_files_are_found(tmp_path: Path) -> None:
    tiny_files(tmp_path, seed=1)  # top level: gz
    tiny_files(tmp_path / "mnist", seed=2, gz=False)  # DIR/<name>/: raw
    paths = resolve_files("mnist", tmp_path)
    assert all(p.parent == tmp_path / "mnist" and p.suffix != ".gz" for p in paths.values())
    # A dataset without its own sub-folder falls back to the top level.
    paths = resolve_files("kmnist", tmp_path)
    assert all(p.parent == tmp_path for p in paths.values())


def test_torchvision_layout_is_found(tmp_path: Path) -> None:
    tiny_files(tmp_path / "FashionMNIST" / "raw", gz=False)
    paths = resolve_files("fashion-mnist", tmp_path)
    assert all(p.parent == tmp_path / "FashionMNIST" / "raw" for p in paths.values())


def test_missing_files_are_listed_with_the_fix(tmp_path: Path) -> None:
    tiny_files(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        resolve_files("mnist", tmp_path)
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "train-images-idx3-ubyte.gz" in msg
    assert "train-labels-idx1-ubyte.gz" not in msg.split("(looked")[0]
    assert str(tmp_path) in msg and "--data-dir" in msg and "CONVLENS_DATA_DIR" in msg and "download" in msg


def test_missing_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match=r"does not exist.*download"):
        resolve_files("mnist", tmp_path / "nowhere")
    monkeypatch.setenv("CONVLENS_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"nowhere \(CONVLENS_DATA_DIR\) does not exist"):
        resolve_files("mnist")


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'fashion_mnist'.*did you mean 'fashion-mnist'"):
        resolve_files("fashion_mnist", "/tmp")


# --- downloads against a local server ---------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from serve(tmp_path / "www")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache, and no offline directory or mirror from the environment."""
    monkeypatch.delenv("CONVLENS_DATA_DIR", raising=False)
    monkeypatch.delenv("CONVLENS_MIRROR", raising=False)
    monkeypatch.setenv("CONVLENS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def tiny_source(folder: Path, url: str) -> Source:
    return Source(
        name="tiny", title="Tiny", classes=tuple("0123456789"), urls=(url,),
        checksums={STANDARD_FILES[k]: "md5:" + md5(folder / STANDARD_FILES[k]) for k in FILE_KEYS},
        mean=(0.5,), std=(0.25,), label_kind="digit",
    )


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_download_ok_lands_in_cache_and_loads(server: Server, cache: Path) -> None:
    arrays = tiny_files(server.root)
    src = tiny_source(server.root, server.url)
    assert cache_dir() == cache
    train = load_dataset(src, "train")
    assert len(train) == 20 and train.source == server.url + "train-images-idx3-ubyte.gz"
    np.testing.assert_array_equal(train.images[:, 0].numpy(), arrays["train_images"])
    np.testing.assert_array_equal(train.labels.numpy(), arrays["train_labels"].astype(np.int64))
    cached = files_in(cache)
    assert [p.name for p in cached] == sorted(STANDARD_FILES.values())
    assert all(p.parent == cache / "tiny" for p in cached)
    for p in cached:
        assert p.read_bytes() == (server.root / p.name).read_bytes()
    assert len(server.requests) == 4
    # Cached files whose hash matches are used without asking the server again.
    test = load_dataset(src, "test")
    np.testing.assert_array_equal(test.images[:, 0].numpy(), arrays["test_images"])
    assert len(server.requests) == 4


def test_checksum_mismatch_leaves_nothing_in_cache(server: Server, cache: Path) -> None:
    tiny_files(server.root)
    src = tiny_source(server.root, server.url)
    wrong = "0" * 32
    bad = replace(src, checksums={**src.checksums, "train-images-idx3-ubyte.gz": "md5:" + wrong})
    with pytest.raises(DownloadError) as info:
        download(bad)
    msg = str(info.value)
    actual = md5(server.root / "train-images-idx3-ubyte.gz")
    assert "train-images-idx3-ubyte.gz" in msg and wrong in msg and actual in msg
    assert server.url in msg and "deleted" in msg and "--data-dir" in msg
    assert files_in(cache) == []  # not the file, not a temporary file
    assert server.requests == ["/train-images-idx3-ubyte.gz"]


def test_mismatch_on_a_later_file_keeps_only_verified_files(server: Server, cache: Path) -> None:
    tiny_files(server.root)
    src = tiny_source(server.root, server.url)
    bad = replace(src, checksums={**src.checksums, "t10k-images-idx3-ubyte.gz": "md5:" + "f" * 32})
    with pytest.raises(DownloadError, match=re.escape("t10k-images-idx3-ubyte.gz")):
        download(bad)
    assert [p.name for p in files_in(cache)] == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_corrupt_cached_file_is_replaced(server: Server, cache: Path) -> None:
    tiny_files(server.root)
    src = tiny_source(server.root, server.url)
    (cache / "tiny").mkdir(parents=True)
    (cache / "tiny" / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    paths = download(src)
    assert paths["train_labels"].read_bytes() == (server.root / "train-labels-idx1-ubyte.gz").read_bytes()
    assert len(files_in(cache)) == 4


def test_registered_source_checks_its_published_hash(server: Server, cache: Path) -> None:
    # The local server serves files that are not the real MNIST: the published md5
    # must reject them (no network involved: base_url points at 127.0.0.1).
    tiny_files(server.root)
    with pytest.raises(DownloadError) as info:
        download("mnist", base_url=server.url)
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in str(info.value)
    assert files_in(cache) == []


def test_http_404_mentions_data_dir(server: Server, cache: Path) -> None:
    tiny_files(server.root)
    src = tiny_source(server.root, server.url + "missing/")
    with pytest.raises(DownloadError) as info:
        download(src)
    msg = str(info.value)
    assert "could not download" in msg and "HTTP 404" in msg
    assert server.url + "missing/train-images-idx3-ubyte.gz" in msg
    assert "--data-dir" in msg and "CONVLENS_DATA_DIR" in msg
    assert files_in(cache) == []


def test_connection_refused_tries_every_mirror(server: Server, cache: Path) -> None:
    tiny_files(server.root)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    src = replace(tiny_source(server.root, server.url), urls=(dead, server.url))
    paths = download(src)  # the first mirror is down, the second works
    assert all(p.is_file() for p in paths.values())
    shutil.rmtree(cache)
    with pytest.raises(DownloadError, match=re.escape(dead) + r".*connection failed.*--data-dir"):
        download(replace(src, urls=(dead,)))
    assert files_in(cache) == []


def test_mirror_env_and_name_placeholder(server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = tiny_files(server.root / "tiny")
    src = tiny_source(server.root / "tiny", "http://127.0.0.1:9/never/")
    monkeypatch.setenv("CONVLENS_MIRROR", server.url + "{name}")
    ds = load_dataset(src, "test")
    np.testing.assert_array_equal(ds.labels.numpy(), arrays["test_labels"])
    assert set(server.requests) == {"/tiny/" + f for f in STANDARD_FILES.values()}


def test_data_dir_means_no_download(server: Server, cache: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_files(server.root)
    src = tiny_source(server.root, server.url)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="Tiny files missing"):
        load_dataset(src, "train", data_dir=tmp_path / "empty")
    monkeypatch.setenv("CONVLENS_DATA_DIR", str(server.root))
    assert load_dataset(src, "train").source == str(server.root / "train-images-idx3-ubyte.gz")
    assert server.requests == []


def test_file_without_published_checksum_is_not_downloaded(server: Server, cache: Path) -> None:
    tiny_files(server.root)
    src = tiny_source(server.root, server.url)
    checks = {k: v for k, v in src.checksums.items() if k != "train-labels-idx1-ubyte.gz"}
    with pytest.raises(DownloadError, match=r"train-labels-idx1-ubyte.gz has no published checksum.*--data-dir"):
        download(replace(src, checksums=checks))
    assert "/train-labels-idx1-ubyte.gz" not in server.requests


def test_empty_directory_reports_the_named_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(f"MNIST files missing in {tmp_path} (--data-dir)")):
        resolve_files("mnist", tmp_path)
