"""`convlens stats` and `convlens topk` on a run directory and on --model module:factory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _helpers import cli_call as _cli
from _helpers import untrained_run
from convlens.data import load_dataset
from convlens.inspect import channel_stats, topk_examples


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    return untrained_run(tmp_path_factory.mktemp("runs") / "run", mnist_dir)


def test_stats_on_a_run(run_dir: Path, mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "stats", str(run_dir), "--layer", "conv2", "--data-dir", str(mnist_dir),
                          "--out", str(tmp_path), "--dump", str(tmp_path / "acts"))
    assert code == 0, err
    assert (tmp_path / "stats-conv2-test.png").exists() and (tmp_path / "stats-conv2-test.svg").exists()
    sidecar = json.loads((tmp_path / "stats-conv2-test.json").read_text())
    assert sidecar["caption"].startswith("Per-channel activation statistics of conv2 over 1,500 inputs")
    assert "Dead channels" in sidecar["alt"]
    # the printed table is the library's numbers
    from convlens import load_run

    run = load_run(run_dir)
    ref = channel_stats(run.model, load_dataset("mnist", "test", data_dir=mnist_dir), ["conv2"], progress=False)["conv2"]
    assert f"{float(ref.mean[0]):.4g}" in out
    assert "conv2: 32 channels, 1,500 inputs" in out
    assert (tmp_path / "acts" / "manifest.json").exists()


def test_stats_defaults_to_every_conv_layer(run_dir: Path, mnist_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "stats", str(run_dir), "--data-dir", str(mnist_dir), "--out", str(tmp_path))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["stats-conv1-test.png", "stats-conv2-test.png"]


def test_topk_on_a_run(run_dir: Path, mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "topk", str(run_dir), "--layer", "conv1", "--k", "4", "--channels", "0-2,7",
                          "--data-dir", str(mnist_dir), "--out", str(tmp_path))
    assert code == 0, err
    sidecar = json.loads((tmp_path / "topk-conv1-test-k4-ch0-2-7.json").read_text())
    assert "the 4 of 1,500 inputs that excite the channel most" in sidecar["caption"]
    assert "filter" in sidecar["caption"]  # conv1 looks at the input: its filters are shown
    from convlens import load_run

    ds = load_dataset("mnist", "test", data_dir=mnist_dir)
    ref = topk_examples(load_run(run_dir).model, ds, "conv1", k=4, channels=[0, 1, 2, 7], progress=False)["conv1"]
    first = int(ref.indices[3, 0])
    assert f"{first}:{ds.classes[int(ds.labels[first])]}" in out


def test_topk_with_a_user_model(mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zoo import SeedCNN

    torch.save(SeedCNN().state_dict(), tmp_path / "w.pt")
    code, out, err = _cli(capsys, "topk", "--model", "zoo:SeedCNN", "--weights", str(tmp_path / "w.pt"),
                          "--layer", "relu2", "--k", "2", "--data-dir", str(mnist_dir), "--out", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "topk-relu2-test-k2.png").exists()
    assert "receptive field 14×14" in out


def test_user_errors_are_one_line(run_dir: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "topk", str(run_dir), "--layer", "conv3", "--data-dir", str(mnist_dir))
    assert code == 1 and err.count("\n") == 1 and "did you mean" in err
    code, _, err = _cli(capsys, "stats", "--model", "nowhere_xyz:make", "--data-dir", str(mnist_dir))
    assert code == 1 and "cannot import module 'nowhere_xyz'" in err
    code, _, err = _cli(capsys, "topk", str(run_dir), "--channels", "a-b", "--data-dir", str(mnist_dir))
    assert code == 2 and "--channels" in err
