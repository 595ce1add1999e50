"""Training-time tracking (convlens.train.tracking.Tracker): what it records, that it
changes nothing, and that TensorBoard reads its events back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from _helpers import mnist_small, one_thread, state_equal
from convlens.train import TrainConfig
from convlens.train.tracking import Tracker, load_tracking

STEPS, EVERY = 8, 3


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object, Tracker, Path]:
    """The same 8 steps trained without and with tracking (every 3 steps)."""
    from convlens.models import get_config
    from convlens.train.loop import train

    train_data, test_data = mnist_small()
    cfg = TrainConfig(steps=STEPS, snapshot_every=0, seed=0)
    d = tmp_path_factory.mktemp("tracking")
    tracker = Tracker(every=EVERY, probe=64, digits=4, tensorboard=None)
    with one_thread():
        plain = train(get_config("seed-cnn"), train_data, test_data, d / "plain", cfg, device="cpu")
        tracked = train(get_config("seed-cnn"), train_data, test_data, d / "tracked", cfg, device="cpu",
                        callbacks=[tracker])
    return plain, tracked, tracker, d / "tracked"


def test_tracking_leaves_training_bitwise_identical(two_runs) -> None:  # type: ignore[no-untyped-def]
    plain, tracked, _, _ = two_runs
    assert state_equal(plain.model.state_dict(), tracked.model.state_dict())
    assert plain.metrics["epochs"][-1]["train_loss"] == tracked.metrics["epochs"][-1]["train_loss"]


def test_every_record_is_written_into_the_run(two_runs) -> None:  # type: ignore[no-untyped-def]
    from convlens._atomic import foreign_entries
    from convlens.models.run import RUN_FILES

    _, tracked, tracker, out = two_runs
    doc, arrays = load_tracking(out)
    steps = [r["step"] for r in doc["records"]]
    assert steps == [0, 3, 6, 8]
    assert doc["records"] == tracker.records
    first = doc["records"][0]
    assert first["weight_change"] == {"conv1": 0.0, "conv2": 0.0, "fc": 0.0}
    assert set(first["cka_previous"]) == {"conv1", "conv2"}
    for s in steps:
        key = f"step_{s:08d}"
        assert arrays[f"filters/{key}"].shape == (16, 1, 5, 5)
        assert arrays[f"maps/{key}"].shape == (4, 16, 28, 28)
        assert arrays[f"cams/{key}"].shape == (4, 28, 28)
    # the last filters are the trained ones; the first the initial ones
    assert torch.equal(arrays["filters/step_00000008"], tracked.model.conv1.weight.detach())
    # relative weight change from the start agrees with the recorded filters
    w0, w8 = arrays["filters/step_00000000"].double(), arrays["filters/step_00000008"].double()
    assert doc["records"][-1]["weight_change_from_start"]["conv1"] == pytest.approx(
        float((w8 - w0).norm() / w0.norm()), rel=1e-6)
    assert arrays["probe/labels"].tolist() == [0, 1, 2, 3]  # the first example of each class
    assert foreign_entries(out, RUN_FILES) == []  # all convlens's own: --force may replace the run


def _numpy_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) of two (n, p) feature matrices, in float64."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    return float(np.linalg.norm(a.T @ b) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.conv1(x))).flatten(1))


def test_record_restores_rng_modes_and_grads_and_works_in_inference_mode() -> None:
    torch.manual_seed(0)
    model = _Net().train()
    x, y = torch.randn(12, 1, 8, 8), torch.arange(12) % 3
    model(x).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    copies = {n: g.clone() for n, g in grads.items()}
    tracker = Tracker(every=1, probe=12, digits=3, tensorboard=False).attach(model, None, x, y)
    with one_thread():
        rng = torch.get_rng_state()
        tracker.record(0)
        assert torch.equal(torch.get_rng_state(), rng)
        with torch.no_grad():
            model.conv1.weight.add_(0.3 * torch.randn_like(model.conv1.weight))
        rng = torch.get_rng_state()
        with torch.inference_mode():  # the caller's mode does not stop a record
            rec = tracker.record(1)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and model.drop.training
    assert all(p.grad is grads[n] and torch.equal(p.grad, copies[n]) for n, p in model.named_parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert 0 <= rec["probe_accuracy"] <= 1 and np.isfinite(rec["probe_loss"])
    # representation drift: CKA of conv1 before and after the change, against NumPy
    with torch.no_grad():
        before = torch.nn.functional.conv2d(x, tracker._prev_model.conv1.weight, tracker._prev_model.conv1.bias)
    assert torch.equal(tracker._prev_model.conv1.weight, model.conv1.weight)  # it now holds the new weights
    w_before = tracker.arrays["filters/step_00000000"]
    with torch.no_grad():
        old = torch.nn.functional.conv2d(x, w_before, model.conv1.bias).flatten(1).double().numpy()
        new = before.flatten(1).double().numpy()
    assert rec["cka_previous"]["conv1"] == pytest.approx(_numpy_cka(old, new), abs=1e-6)
    assert rec["cka_previous"]["conv1"] < 0.999
    assert rec["weight_change"]["fc"] == 0.0 and rec["weight_change"]["conv1"] > 0


def test_tensorboard_events_read_back(two_runs) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, tracker, out = two_runs
    acc = EventAccumulator(str(out / "tracking" / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"probe/loss", "probe/accuracy", "cka_previous/conv2", "weight_change/fc"} <= set(tags["scalars"])
    steps = [r["step"] for r in tracker.records]
    assert [e.step for e in acc.Scalars("probe/loss")] == steps
    assert [e.value for e in acc.Scalars("probe/loss")] == pytest.approx([r["probe_loss"] for r in tracker.records])
    assert [e.step for e in acc.Images("conv1/filters")] == steps
    assert {"conv1/maps", "probe/cams"} <= set(tags["images"])
    hint = tracker.hint(out)
    assert f"--samples_per_plugin images={len(steps)}" in hint and str(out / "tracking" / "tensorboard") in hint
