"""CIFAR-10 and CIFAR-100 binary versions, downloaded from a local HTTP server on 127.0.0.1
that serves small archives in the real format, verified by checksum, extracted atomically."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from _data_beds import Server, serve, write_cifar
from convlens.data import load_dataset
from convlens.data.cifar import CIFAR
from convlens.errors import ConvlensError, DownloadError


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from serve(tmp_path / "www")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CONVLENS_DATA_DIR", raising=False)
    monkeypatch.delenv("CONVLENS_MIRROR", raising=False)
    monkeypatch.setenv("CONVLENS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_published_checksums_are_the_cifar_pages() -> None:
    # the md5s the CIFAR page lists for the binary versions (not the python pickles')
    assert CIFAR["cifar10"].source.checksums == {"cifar-10-binary.tar.gz": "md5:c32a1d4ab5d03f1284b67883e8d87530"}
    assert CIFAR["cifar100"].source.checksums == {"cifar-100-binary.tar.gz": "md5:03b5dce01913d631647c71ecec9e9cb8"}


def test_cifar10_downloads_verifies_and_decodes_the_records(server: Server, cache: Path) -> None:
    bed = write_cifar(server.root)
    sums = {bed.archive.name: f"md5:{bed.md5}"}
    train = load_dataset("cifar10", "train", base_url=server.url, checksums=sums)
    test = load_dataset("cifar10", "test", base_url=server.url, checksums=sums)
    assert server.requests == ["/cifar-10-binary.tar.gz"]  # downloaded once, then extracted from the cache
    assert train.shape == (3, 32, 32) and len(train) == 20 and len(test) == 4
    assert train.classes[0] == "airplane" and train.classes[9] == "truck" and train.name == "cifar10"
    # record = label byte + red plane + green plane + blue plane, each row-major
    assert np.array_equal(train.images.numpy(), bed.train[0]) and np.array_equal(train.labels.numpy(), bed.train[1])
    assert np.array_equal(test.images.numpy(), bed.test[0])
    x = bed.train[0].astype(np.float64) / 255
    assert np.allclose(test.mean, x.mean(axis=(0, 2, 3)), atol=1e-12)  # the training images' statistics
    assert np.allclose(test.std, x.std(axis=(0, 2, 3)), atol=1e-12)
    assert sorted(p.name for p in (cache / "cifar10").iterdir()) == ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]


def test_cifar100_uses_the_fine_labels(server: Server, cache: Path) -> None:
    bed = write_cifar(server.root, hundred=True)
    train = load_dataset("cifar100", "train", base_url=server.url,
                         checksums={bed.archive.name: f"md5:{bed.md5}"})
    assert len(train.classes) == 100 and train.classes[7] == "class007"
    assert np.array_equal(train.labels.numpy(), bed.train[1]) and np.array_equal(train.images.numpy(), bed.train[0])


def test_a_checksum_mismatch_is_one_line_and_leaves_nothing(server: Server, cache: Path) -> None:
    write_cifar(server.root)
    with pytest.raises(DownloadError) as info:
        load_dataset("cifar10", "train", base_url=server.url, checksums={"cifar-10-binary.tar.gz": "md5:" + "0" * 32})
    line = str(info.value)
    assert "checksum mismatch" in line and "cifar-10-binary.tar.gz" in line and "\n" not in line
    assert not any((cache / "cifar10").iterdir())  # no archive, no temporary file, no extraction


def test_the_published_checksum_guards_a_mirror(server: Server, cache: Path) -> None:
    write_cifar(server.root)  # not the real archive: the published md5 does not match it
    with pytest.raises(DownloadError, match="checksum mismatch"):
        load_dataset("cifar10", "test", base_url=server.url)


def test_a_truncated_batch_names_the_file_and_nothing_is_extracted(server: Server, cache: Path) -> None:
    bed = write_cifar(server.root, corrupt="data_batch_3.bin")
    with pytest.raises(ConvlensError) as info:
        load_dataset("cifar10", "train", base_url=server.url, checksums={bed.archive.name: f"md5:{bed.md5}"})
    line = str(info.value)
    assert "data_batch_3.bin" in line and "whole number" in line and "\n" not in line
    assert [p.name for p in (cache / "cifar10").iterdir()] == ["cifar-10-binary.tar.gz"]  # verified, not extracted


def test_an_offline_copy_in_the_data_directory(tmp_path: Path, cache: Path) -> None:
    bed = write_cifar(tmp_path / "offline")
    ds = load_dataset("cifar10", "test", data_dir=tmp_path / "offline",
                      checksums={bed.archive.name: f"md5:{bed.md5}"})
    assert np.array_equal(ds.images.numpy(), bed.test[0])
    assert ds.source == str(bed.archive.resolve())
