"""channel_stats against NumPy over all activations; dumps read back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import convlens
from convlens.errors import ConfigError, ConvlensError, DataError, LayerError
from convlens.inspect import channel_stats, dump_activations, dump_info, read_activations
from zoo import (
    InplaceCNN,
    ResNet18,
    SeedCNN,
    SharedCNN,
    assert_same_state,
    model_state,
    seeded,
)


def _inputs(n: int, shape: tuple[int, ...] = (1, 28, 28), seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def _numpy_stats(acts: np.ndarray, threshold: float = 0.0) -> dict[str, np.ndarray]:
    """The oracle: every activation at once, float64, per channel."""
    a = acts.astype(np.float64)
    n, c = a.shape[:2]
    per_channel = np.moveaxis(a.reshape(n, c, -1), 1, 0).reshape(c, -1)
    per_input_max = a.reshape(n, c, -1).max(axis=2)
    return {
        "mean": per_channel.mean(axis=1),
        "std": per_channel.std(axis=1),
        "min": per_channel.min(axis=1),
        "max": per_channel.max(axis=1),
        "zero_fraction": (per_channel <= threshold).mean(axis=1),
        "silent_fraction": (per_input_max <= threshold).mean(axis=0),
    }


def _check(stats: convlens.inspect.LayerStats, acts: torch.Tensor, threshold: float = 0.0) -> None:
    want = _numpy_stats(acts.numpy(), threshold)
    for field, expected in want.items():
        got = getattr(stats, field).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=field)


def test_seed_cnn_all_layers_equal_numpy_over_all_activations() -> None:
    m = seeded(SeedCNN())
    x = _inputs(200)
    report = channel_stats(m, x, ["conv1", "relu1", "conv2", "relu2", "fc"], batch_size=64, progress=False)
    with torch.no_grad():
        c1 = m.conv1(x)
        r2 = m.relu2(m.conv2(m.pool1(m.relu1(c1))))
        fc = m.fc(m.pool2(r2).flatten(1))
    _check(report["conv1"], c1)
    _check(report["relu1"], c1.clamp(min=0))
    _check(report["conv2"], m.conv2(m.pool1(c1.clamp(min=0))).detach())
    _check(report["relu2"], r2)
    _check(report["fc"], fc)
    assert report.n_inputs == 200 and report["relu2"].n_inputs == 200
    assert report["conv2"].shape == (32, 14, 14)
    assert list(report) == ["conv1", "relu1", "conv2", "relu2", "fc"]


def test_threshold_batch_sizes_and_data_forms_agree() -> None:
    # float64 model and data: float32 convolutions of batches of 50 and of 7 differ by up
    # to ~2e-7 on some CPUs (the kernel changes with the batch size), which would hide
    # whether the accumulators merge batches exactly.
    m = seeded(InplaceCNN()).double()
    x = _inputs(50, (1, 9, 9)).double()
    with torch.no_grad():
        c1 = m.conv1(x)
    ref = channel_stats(m, x, "conv1", batch_size=50, threshold=0.25, progress=False)
    _check(ref["conv1"], c1, threshold=0.25)  # the in-place ReLU did not leak into the stats
    as_list = [(x[i:i + 7], torch.zeros(7)) for i in range(0, 50, 7)]
    for data in (as_list, (b[0] for b in as_list)):
        other = channel_stats(m, data, "conv1", threshold=0.25, progress=False)["conv1"]
        for f in ("mean", "std", "max", "zero_fraction", "silent_fraction"):
            torch.testing.assert_close(getattr(other, f), getattr(ref["conv1"], f), rtol=1e-12, atol=1e-12)


def _flagged_model() -> nn.Module:
    """Channel 0 never fires, channel 1 fires on exactly one input, channel 2 always."""
    conv = nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 1.0, 0.0]).view(3, 1, 1, 1))
        conv.bias.copy_(torch.tensor([-100.0, -9.5, 1.0]))
    return nn.Sequential(conv, nn.ReLU())


def test_dead_and_rarely_active_flags() -> None:
    x = torch.zeros(200, 1, 4, 4)
    x[17, 0, 2, 3] = 10.0  # the one input on which channel 1 fires
    m = _flagged_model()
    s = channel_stats(m, x, ["1"], progress=False)["1"]
    assert s.dead_channels == [0]
    assert s.rare_channels == [1]
    torch.testing.assert_close(s.active_fraction, torch.tensor([0.0, 1 / 200, 1.0], dtype=torch.float64))
    assert s.zero_fraction[1].item() == pytest.approx(1 - 1 / (200 * 16))
    assert "1 dead (0)" in s.summary() and "1 rarely active (1)" in s.summary()
    rows = s.rows()
    assert [r["flag"] for r in rows] == ["dead", "rare", ""]
    lenient = channel_stats(m, x, ["1"], rare_below=0.001, dead_at=0.01, progress=False)["1"]
    assert lenient.dead_channels == [0, 1] and lenient.rare_channels == []


def test_shared_module_gets_one_entry_per_call() -> None:
    m = seeded(SharedCNN())
    x = _inputs(40, (1, 6, 6))
    report = channel_stats(m, x, ["block.0", "stem"], batch_size=16, progress=False)
    assert sorted(report) == ["block.0#1", "block.0#2", "stem"]
    with torch.no_grad():
        s = m.stem(x)
        a = m.block[0](s)
        b = m.block[0](torch.relu(a))
    _check(report["block.0#1"], a)
    _check(report["block.0#2"], b)
    with pytest.raises(LayerError, match=r"block\.0#1"):
        report["block.0"]


def test_model_state_unchanged_and_resnet_in_train_mode() -> None:
    m = seeded(ResNet18(num_classes=4)).train()
    before = model_state(m)
    x = _inputs(6, (3, 32, 32))
    report = channel_stats(m, x, ["layer1.0.bn2", "layer2"], batch_size=4, progress=False)
    assert_same_state(before, model_state(m))
    m.eval()
    with torch.no_grad():
        stem = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        b = m.layer1[0]
        bn2 = b.bn2(b.conv2(b.relu(b.bn1(b.conv1(stem)))))
        l2 = m.layer2(m.layer1(stem))
    _check(report["layer1.0.bn2"], bn2)  # eval-mode statistics, despite the in-place add after it
    _check(report["layer2"], l2)


def test_real_mnist_dataset(mnist_dir: Path) -> None:
    ds = convlens.load_dataset("mnist", "test", data_dir=mnist_dir)
    m = seeded(SeedCNN())
    report = channel_stats(m, ds, ["conv1"], batch_size=500, progress=False)
    x = ds.normalise(ds.images)
    with torch.no_grad():
        _check(report["conv1"], m.conv1(x))
    assert report.n_inputs == len(ds) == 1500


def test_dump_round_trip(tmp_path: Path) -> None:
    m = seeded(SeedCNN())
    x = _inputs(70)
    out = tmp_path / "acts"
    report = channel_stats(m, x, ["conv2", "fc"], batch_size=16, dump_to=out, progress=False)
    assert report.dump_dir == out
    with torch.no_grad():
        c2 = m.conv2(m.pool1(m.relu1(m.conv1(x))))
        fc = m(x)
    torch.testing.assert_close(read_activations(out, "conv2"), c2)
    torch.testing.assert_close(read_activations(out, "fc", 13, 41), fc[13:41])
    info = dump_info(out)
    assert info["n_inputs"] == 70 and info["layers"]["conv2"]["shape"] == [32, 14, 14]
    assert sum(s["count"] for s in info["layers"]["conv2"]["shards"]) == 70
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial dirs left


def test_small_shards_and_float16(tmp_path: Path) -> None:
    m = seeded(SeedCNN())
    x = _inputs(20)
    out = dump_activations(m, x, "conv1", tmp_path / "d", batch_size=3, dtype=torch.float16, shard_mb=0.05,
                           progress=False)
    assert out == (tmp_path / "d").resolve()
    assert len(dump_info(tmp_path / "d")["layers"]["conv1"]["shards"]) > 3
    with torch.no_grad():
        ref = m.conv1(x).half()
    torch.testing.assert_close(read_activations(tmp_path / "d", "conv1"), ref)


def test_a_failed_pass_leaves_no_dump(tmp_path: Path) -> None:
    m = seeded(SeedCNN())

    def batches() -> object:
        yield _inputs(4)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        channel_stats(m, batches(), ["conv1"], dump_to=tmp_path / "d", progress=False)
    assert list(tmp_path.iterdir()) == []
    assert sum(len(mm._forward_hooks) for mm in m.modules()) == 0


def test_errors() -> None:
    m = SeedCNN()
    with pytest.raises(DataError, match="uint8"):
        channel_stats(m, torch.zeros(3, 1, 28, 28, dtype=torch.uint8), ["conv1"], progress=False)
    with pytest.raises(DataError, match="empty"):
        channel_stats(m, [], ["conv1"], progress=False)
    with pytest.raises(ConfigError, match="batch_size"):
        channel_stats(m, torch.zeros(3, 1, 28, 28), ["conv1"], batch_size=0, progress=False)
    with pytest.raises(ConfigError, match="dead_at"):
        channel_stats(m, torch.zeros(3, 1, 28, 28), ["conv1"], dead_at=1.5, progress=False)
    with pytest.raises(LayerError, match="did you mean"):
        channel_stats(m, torch.zeros(3, 1, 28, 28), ["conv9"], progress=False)
    with pytest.raises(ConvlensError, match="not an activation dump"):
        dump_info(Path("/nonexistent-dir"))


def test_passes_use_the_one_progress_bar_quiet_off_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from convlens import _progress
    from convlens.inspect import passes

    asked: list[tuple[str, float | None, bool | None]] = []

    def spy(description: str, total: float | None = None, enabled: bool | None = None) -> _progress.Bar:
        asked.append((description, total, enabled))
        return _progress.progress_bar(description, total, enabled)

    monkeypatch.setattr(passes, "progress_bar", spy)
    m = seeded(SeedCNN())
    channel_stats(m, _inputs(9), ["conv1"], batch_size=4)  # progress=None: a bar only on a terminal
    assert asked == [("statistics", 9, None)]
    assert capsys.readouterr().err == ""  # pytest's stderr is no terminal
