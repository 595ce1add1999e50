"""`convlens featvis`, `convlens evolution` and `convlens train --track` through the real
entry point: what they write, what they print, and one line for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _helpers import cli_call, one_thread, small_run, untrained_run, write_mnist_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    return untrained_run(tmp_path_factory.mktemp("runs") / "run", mnist_dir)


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    with one_thread():
        yield


def _error_line(err: str) -> str:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("convlens: error: "), err
    return lines[0]


def test_featvis_writes_the_figure_beside_natural_examples(run_dir: Path, mnist_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = ("featvis", str(run_dir), "--layer", "conv2", "--channels", "0-2", "--steps", "6", "--k", "3",
            "--data-dir", str(mnist_dir), "--out", str(tmp_path))
    code, out, err = cli_call(capsys, *args)
    assert code == 0, err
    stem = "featvis-conv2-ch0-2"
    assert {p.name for p in tmp_path.iterdir()} == {f"{stem}.png", f"{stem}.svg", f"{stem}.json", f"{stem}-scores.json"}
    sidecar = json.loads((tmp_path / f"{stem}.json").read_text())
    assert sidecar["caption"].startswith("Feature visualisation of conv2 channels 0–2:")
    assert sidecar["caption"] in out
    scores = json.loads((tmp_path / f"{stem}-scores.json").read_text())
    assert scores["channels"] == [0, 1, 2] and scores["similarity_layer"] == "conv1"
    assert scores["figures"] == {stem: {"caption": sidecar["caption"], "alt": sidecar["alt"]}}
    from convlens.views import saved_results  # what the report and the app show of it

    (saved,) = saved_results(tmp_path)
    assert saved.key == f"{stem}-scores" and [f.stem for f in saved.figures] == [stem]
    # the reliability ratio is the optimised peak over the best natural one, from the top-k
    from convlens import load_run
    from convlens.data import load_dataset
    from convlens.inspect import topk_examples

    run = load_run(run_dir)
    top = topk_examples(run.model, load_dataset("mnist", "test", data_dir=mnist_dir), "conv2", k=1,
                        channels=[0, 1, 2], crops=False, progress=False)["conv2"]
    np.testing.assert_allclose(scores["ratio_to_best_natural"], np.array(scores["peak"]) / top.values[:, 0].numpy(),
                               rtol=1e-5)
    # a second time without --force: one line, nothing replaced
    before = (tmp_path / f"{stem}.png").stat().st_mtime_ns
    code, _, err = cli_call(capsys, *args)
    assert code == 1 and "already exists; add --force" in _error_line(err)
    assert (tmp_path / f"{stem}.png").stat().st_mtime_ns == before


@pytest.mark.parametrize(("extra", "message"), [
    (("--channels", "0-40"), "channel 32 is out of range: conv2 has channels 0..31"),
    (("--steps", "0"), "steps must be a positive integer, got 0"),
    (("--steps", "-5"), "steps must be a positive integer, got -5"),
    (("--layer", "conv7"), "unknown layer 'conv7'"),
])
def test_featvis_bad_input_is_one_line_and_writes_nothing(run_dir: Path, tmp_path: Path, extra: tuple[str, ...],
                                                          message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli_call(capsys, "featvis", str(run_dir), "--layer", "conv2", *extra, "--out", str(tmp_path / "f"))
    assert code == 1
    assert message in _error_line(err)
    assert not (tmp_path / "f").exists() or not any((tmp_path / "f").iterdir())


def test_evolution_animates_the_snapshots(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    rec = small_run(tmp_path_factory)
    run = tmp_path / "run"
    shutil.copytree(rec.run.path, run)
    code, out, err = cli_call(capsys, "evolution", str(run), "--out", str(tmp_path / "fig"))
    assert code == 0, err
    steps = sorted(rec.run.snapshots())
    gif = Image.open(tmp_path / "fig" / "evolution-conv1-animation.gif")
    assert gif.format == "GIF" and gif.n_frames == len(steps)
    doc = json.loads((tmp_path / "fig" / "evolution-conv1-kinds.json").read_text())
    assert doc["steps"] == steps and doc["source"] == "snapshots"
    w0, w1 = rec.run.snapshots()[steps[0]].double(), rec.run.snapshots()[steps[-1]].double()
    assert doc["weight_change_from_start"][-1] == pytest.approx(float((w1 - w0).norm() / w0.norm()), rel=1e-9)
    assert f"animation: {tmp_path / 'fig' / 'evolution-conv1-animation.gif'} ({len(steps)} frames" in out
    assert f"step {steps[0]}: " in out and "conv1 filters are oriented edge or bar detectors" in out


def test_train_track_writes_records_and_prints_the_tensorboard_hint(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorboard")
    data = write_mnist_dir(tmp_path / "mnist", n_train=128, n_test=64)
    out = tmp_path / "run"
    code, text, err = cli_call(capsys, "train", "--data-dir", str(data), "--out", str(out), "--steps", "4",
                               "--batch-size", "32", "--track", "--track-every", "2")
    assert code == 0, err
    doc = json.loads((out / "tracking" / "tracking.json").read_text())
    assert [r["step"] for r in doc["records"]] == [0, 2, 4]
    assert f"tensorboard --logdir {out / 'tracking' / 'tensorboard'} --samples_per_plugin images=3" in text
    code, text, err = cli_call(capsys, "evolution", str(out), "--out", str(tmp_path / "fig"))
    assert code == 0, err
    assert "(3 frames, from the run's tracking)" in text
    code, _, err = cli_call(capsys, "train", "--data-dir", str(data), "--out", str(tmp_path / "r2"), "--steps", "2",
                            "--track-every", "2")
    assert code == 2 and "--track-every goes with --track" in err


def test_train_track_without_tensorboard_names_the_extra_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import convlens.train.tracking as tracking

    monkeypatch.setattr(tracking, "tensorboard_available", lambda: False)
    data = write_mnist_dir(tmp_path / "mnist", n_train=64, n_test=32)
    code, text, err = cli_call(capsys, "train", "--data-dir", str(data), "--out", str(tmp_path / "run"), "--steps", "2",
                               "--batch-size", "32", "--track")
    assert code == 0, err
    assert "pip install 'convlens[tensorboard]' for TensorBoard events" in text  # the extra's name survives rich
    assert not (tmp_path / "run" / "tracking" / "tensorboard").exists()
