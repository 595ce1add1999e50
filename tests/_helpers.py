"""Shared helpers for the model, run, training, figure, CLI and demo tests.

Training is the expensive part of these tests, so one small run is trained once per
test process (:func:`small_run`) and reused by every module that only needs *a*
trained run. :func:`train_recorded` trains while recording what the loop did, step by
step, through its public callback protocol (and by keeping a handle on the model it
builds), so the tests can check the run directory against what really happened.

The machine the tests run on may be shared; PyTorch's intra-op thread pool is slowed
down badly by competing processes, so the training here runs with one thread
(:func:`one_thread`, restored afterwards). Library code never sets threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MNIST = REPO.parent / "shared" / "data" / "mnist-9k"

#: Sizes of the small subsets most tests train on.
N_TRAIN, N_TEST = 512, 256


def mnist_path() -> Path:
    """The offline MNIST copy, as the conftest's ``mnist_dir`` fixture finds it."""
    d = Path(os.environ.get("CONVLENS_DATA_DIR", DEFAULT_MNIST))
    if not any((d / n).exists() for n in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte")):
        pytest.fail(f"offline MNIST not found in {d}; set CONVLENS_DATA_DIR")
    return d


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one intra-op thread, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_DATA: dict[str, Any] = {}


def mnist_full() -> tuple[Any, Any]:
    """(train, test) ImageDatasets of the whole offline copy, loaded once."""
    if "full" not in _DATA:
        from convlens.data import load_dataset

        d = mnist_path()
        _DATA["full"] = (load_dataset("mnist", "train", data_dir=d), load_dataset("mnist", "test", data_dir=d))
    return _DATA["full"]


def mnist_small() -> tuple[Any, Any]:
    """The first N_TRAIN training and N_TEST test images."""
    train, test = mnist_full()
    return train.subset(range(N_TRAIN)), test.subset(range(N_TEST))


# --- a tiny IDX MNIST directory ------------------------------------------------------------------

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def write_mnist_dir(folder: Path, *, n_train: int = 256, n_test: int = 64,
                    drop_digits: tuple[int, ...] = ()) -> Path:
    """Write the first real MNIST digits as IDX files into ``folder`` (omitting ``drop_digits``)."""
    from convlens.data import write_idx

    train, test = mnist_full()
    folder.mkdir(parents=True, exist_ok=True)
    for split, ds, n in (("train", train, n_train), ("test", test, n_test)):
        labels = ds.labels.numpy()
        keep = np.flatnonzero(~np.isin(labels, drop_digits))[:n]
        write_idx(folder / MNIST_FILES[f"{split}_images"], ds.images.numpy()[keep, 0])
        write_idx(folder / MNIST_FILES[f"{split}_labels"], labels[keep].astype(np.uint8))
    return folder


# --- training with a record of what happened -----------------------------------------------------


@dataclass
class Recording:
    """What :func:`train_recorded` saw while the loop ran."""

    run: Any = None
    model: Any = None  # the module the loop trained (a handle, not a copy)
    start: tuple[int, int] | None = None  # on_start(total_steps, steps_per_epoch)
    step_stats: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)  # loss.item() of each optimiser step
    step_correct: list[tuple[int, int]] = field(default_factory=list)  # (right, batch size) per step
    first_weights: dict[int, torch.Tensor] = field(default_factory=dict)  # step -> conv1 weight
    epoch_records: list[dict[str, Any]] = field(default_factory=list)
    epoch_states: list[dict[str, torch.Tensor]] = field(default_factory=list)  # at each on_epoch
    ended: int = 0


class Recorder:
    """A training callback that keeps copies of the model's weights as the loop goes."""

    def __init__(self, rec: Recording, first_layer: str = "conv1") -> None:
        self.rec = rec
        self.first_layer = first_layer

    def _first(self) -> torch.Tensor:
        return self.rec.model.get_submodule(self.first_layer).weight.detach().clone()

    def on_start(self, total_steps: int, steps_per_epoch: int) -> None:
        self.rec.start = (total_steps, steps_per_epoch)
        self.rec.first_weights[0] = self._first()

    def on_step(self, step: int, stats: dict[str, float]) -> None:
        self.rec.step_stats.append((step, dict(stats)))
        self.rec.first_weights[step] = self._first()

    def on_epoch(self, record: dict[str, Any]) -> None:
        self.rec.epoch_records.append(dict(record))
        self.rec.epoch_states.append({k: v.detach().clone() for k, v in self.rec.model.state_dict().items()})

    def on_end(self) -> None:
        self.rec.ended += 1


class _LossSpy:
    """Stands in for ``torch.nn.functional`` inside the loop: records each training loss."""

    def __init__(self, rec: Recording) -> None:
        import torch.nn.functional as F

        self._f = F
        self._rec = rec

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def cross_entropy(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        loss = self._f.cross_entropy(*args, **kwargs)
        if kwargs.get("reduction", "mean") == "mean" and torch.is_grad_enabled():
            logits, target = args[0], args[1]
            self._rec.step_losses.append(float(loss.item()))
            self._rec.step_correct.append((int((logits.argmax(1) == target).sum()), len(target)))
        return loss


def train_recorded(
    out: Path,
    config: Any,
    *,
    data: tuple[Any, Any] | None = None,
    arch: str = "seed-cnn",
    extra_callbacks: tuple[Any, ...] = (),
    overwrite: bool = False,
) -> Recording:
    """Train ``arch`` on ``data`` (default: the small subsets) into ``out``, recording it all.

    Exceptions from the loop (e.g. a KeyboardInterrupt raised by an extra callback)
    propagate; the partial :class:`Recording` is attached as ``exc.recording``.
    """
    import convlens.train.loop as loop
    from convlens.models import get_config

    rec = Recording()
    train_data, test_data = data if data is not None else mnist_small()
    build = loop.build_cnn

    def keep(cfg: Any) -> Any:
        rec.model = build(cfg)
        return rec.model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "build_cnn", keep)
        mp.setattr(loop, "F", _LossSpy(rec))
        try:
            rec.run = loop.train(get_config(arch), train_data, test_data, out, config, device="cpu",
                                 callbacks=(Recorder(rec), *extra_callbacks), overwrite=overwrite)
        except BaseException as exc:
            exc.recording = rec  # type: ignore[attr-defined]
            raise
    return rec


_RUNS: dict[str, Recording] = {}


def small_run(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """A seed-cnn trained for 2 epochs (16 steps, snapshots every 3) on the small subsets.

    Trained once per test process and shared; treat it as read-only (copy the run
    directory before changing anything in it).
    """
    if "small" not in _RUNS:
        from convlens.train import TrainConfig

        out = tmp_path_factory.mktemp("shared-run") / "run"
        with one_thread():
            _RUNS["small"] = train_recorded(out, TrainConfig(epochs=2, snapshot_every=3, seed=0))
    return _RUNS["small"]


def state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same keys and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def partial_dirs(parent: Path) -> list[Path]:
    """Temporary directories an atomic write leaves beside its target if it fails."""
    return [p for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# --- hypothesis ----------------------------------------------------------------------------------
# Example counts of the convolution property tests: ``conv-ci`` by default (over 500
# examples across the conv test files), ``conv-thorough`` with CONVLENS_CONV_PROFILE.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("conv-ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("conv-thorough", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONV_PROFILE = settings.get_profile(os.environ.get("CONVLENS_CONV_PROFILE", "conv-ci"))


# --- command line --------------------------------------------------------------------------------


def cli_call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``convlens ARGS`` in-process through the real entry point: (exit code, stdout, stderr)."""
    from convlens.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


def untrained_run(path: Path, mnist_dir: Path) -> Path:
    """A seeded, untrained seed-cnn saved as a run on the offline MNIST (fast CLI fixtures)."""
    from convlens.data import load_dataset
    from convlens.models import build_model, get_config
    from convlens.models.run import DataSpec, RunConfig, save_run

    torch.manual_seed(0)
    model = build_model("seed-cnn")
    ds = load_dataset("mnist", "test", data_dir=mnist_dir)
    data = DataSpec(name="mnist", source=str(mnist_dir), classes=ds.classes, mean=ds.mean, std=ds.std)
    cfg = RunConfig(model=get_config("seed-cnn"), data=data, seed=0, train={})
    return save_run(path, cfg, model.state_dict(), {"test_accuracy": 0.1})
