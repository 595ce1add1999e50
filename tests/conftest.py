"""Shared fixtures. Tests use the offline MNIST copy the way a user would:
through CONVLENS_DATA_DIR (CI sets it; here it defaults to ../shared/data/mnist-9k)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MNIST = REPO.parent / "shared" / "data" / "mnist-9k"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    d = Path(os.environ.get("CONVLENS_DATA_DIR", DEFAULT_MNIST))
    if not (d / "train-images-idx3-ubyte.gz").exists() and not (d / "train-images-idx3-ubyte").exists():
        pytest.fail(f"offline MNIST not found in {d}; set CONVLENS_DATA_DIR")
    return d


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real cache from a test."""
    monkeypatch.setenv("CONVLENS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One local Ray cluster with 2 CPUs for the whole test session, shut down at its end
    (the Ray engine's tests; skipped where the ``ray`` extra is not installed)."""
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
