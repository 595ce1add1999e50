"""The training loop: determinism, what metrics.json and the snapshots hold, steps mode,
Ctrl-C, devices. Checked against what the loop really did, recorded step by step
(see ``_helpers.train_recorded``), and against a hand-written evaluation."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from _helpers import (
    N_TRAIN,
    Recording,
    mnist_small,
    one_thread,
    partial_dirs,
    small_run,
    state_equal,
    train_recorded,
)
from convlens.data import ImageDataset
from convlens.errors import ConfigError
from convlens.models import build_model
from convlens.models.run import load_run
from convlens.train import TUTORIAL, RichProgress, TrainConfig, evaluate, resolve_device

STEPS_PER_EPOCH = N_TRAIN // 64  # 8


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    return small_run(tmp_path_factory)


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_and_config_give_bit_identical_weights(shared: Recording, tmp_path: Path) -> None:
    with one_thread():
        again = train_recorded(tmp_path / "again", TrainConfig(epochs=2, snapshot_every=3, seed=0))
    a, b = shared.run.model.state_dict(), again.run.model.state_dict()
    assert state_equal(a, b)
    assert shared.step_losses == again.step_losses
    # the files too: same weights, same metrics apart from timing
    assert (Path(shared.run.path) / "model.safetensors").read_bytes() == (tmp_path / "again" / "model.safetensors").read_bytes()
    strip = [{k: v for k, v in e.items() if k not in ("seconds", "images_per_second")} for e in shared.run.metrics["epochs"]]
    assert strip == [{k: v for k, v in e.items() if k not in ("seconds", "images_per_second")}
                     for e in again.run.metrics["epochs"]]


def test_another_seed_gives_other_weights(shared: Recording, tmp_path: Path) -> None:
    with one_thread():
        other = train_recorded(tmp_path / "other", TrainConfig(epochs=2, snapshot_every=3, seed=1))
    a, b = shared.run.model.state_dict(), other.run.model.state_dict()
    assert a.keys() == b.keys()
    assert all(not torch.equal(a[k], b[k]) for k in a)
    assert other.run.config.seed == 1


def test_deterministic_with_the_default_thread_count(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=6, snapshot_every=0, seed=3)
    a = train_recorded(tmp_path / "a", cfg)
    b = train_recorded(tmp_path / "b", cfg)
    assert state_equal(a.run.model.state_dict(), b.run.model.state_dict())


# --- metrics.json ------------------------------------------------------------------------------


def test_metrics_hold_epoch_means_of_the_real_step_losses(shared: Recording) -> None:
    m = shared.run.metrics
    assert shared.start == (2 * STEPS_PER_EPOCH, STEPS_PER_EPOCH)
    assert len(shared.step_losses) == 2 * STEPS_PER_EPOCH  # one training loss per optimiser step
    assert [e["epoch"] for e in m["epochs"]] == [1, 2]
    assert [e["step"] for e in m["epochs"]] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert m["total_steps"] == m["completed_steps"] == 2 * STEPS_PER_EPOCH and m["complete"] is True
    for i, e in enumerate(m["epochs"]):
        losses = shared.step_losses[i * STEPS_PER_EPOCH:(i + 1) * STEPS_PER_EPOCH]
        right = shared.step_correct[i * STEPS_PER_EPOCH:(i + 1) * STEPS_PER_EPOCH]
        assert e["train_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-12)
        assert e["train_accuracy"] == sum(r for r, _ in right) / sum(n for _, n in right)
    assert m["epochs"][1]["train_loss"] < m["epochs"][0]["train_loss"]  # it learned something
    # the callbacks saw the same records that were saved
    assert shared.epoch_records == m["epochs"]
    assert [s for s, _ in shared.step_stats] == list(range(1, 2 * STEPS_PER_EPOCH + 1))


def _hand_evaluation(model: torch.nn.Module, test: ImageDataset) -> tuple[float, float]:
    """Oracle: normalise all test images by hand, one forward, mean loss and accuracy."""
    x = (test.images.double() / 255.0 - test.mean[0]) / test.std[0]
    with torch.no_grad():
        logits = model.double()(x).float()
    y = test.labels
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def test_test_metrics_equal_an_evaluation_of_the_loaded_model(shared: Recording) -> None:
    _, test = mnist_small()
    last = shared.run.metrics["epochs"][-1]
    run = load_run(shared.run.path)
    loss, acc = evaluate(run.model, test, batch_size=100)
    assert last["test_loss"] == pytest.approx(loss, rel=1e-6)
    assert last["test_accuracy"] == acc
    hand_loss, hand_acc = _hand_evaluation(load_run(shared.run.path).model, test)
    assert last["test_loss"] == pytest.approx(hand_loss, rel=1e-4)
    assert last["test_accuracy"] == pytest.approx(hand_acc, abs=1 / len(test))
    assert run.model.training is False


def test_evaluate_matches_the_hand_evaluation_and_keeps_the_mode(shared: Recording) -> None:
    _, test = mnist_small()
    model = load_run(shared.run.path).model.train()
    loss, acc = evaluate(model, test, batch_size=37)  # a batch size that does not divide 256
    assert model.training is True
    hand_loss, hand_acc = _hand_evaluation(load_run(shared.run.path).model, test)
    assert loss == pytest.approx(hand_loss, rel=1e-4) and acc == pytest.approx(hand_acc, abs=1 / len(test))


def test_config_json_records_the_training(shared: Recording) -> None:
    cfg = shared.run.config
    assert cfg.seed == 0 and cfg.model.arch == "seed-cnn"
    assert cfg.train["epochs"] == 2 and cfg.train["lr"] == TrainConfig().lr and cfg.train["device"] == "cpu"
    assert cfg.data.name == "mnist" and cfg.data.train_size == N_TRAIN and cfg.data.test_size == 256
    assert cfg.data.mean == (0.1307,) and cfg.data.std == (0.3081,)
    assert cfg.data.source.endswith("train-images-idx3-ubyte.gz")
    assert cfg.versions["torch"] == torch.__version__ and "convlens" in cfg.versions


# --- snapshots -----------------------------------------------------------------------------------


def test_snapshots_are_the_weights_at_their_steps(shared: Recording) -> None:
    snaps = shared.run.snapshots()
    assert shared.run.snapshot_layer == "conv1"
    total = 2 * STEPS_PER_EPOCH
    every = {0, *range(3, total + 1, 3), total}  # snapshot_every=3, plus the first and last step
    assert every <= set(snaps)
    assert set(snaps) - every <= {STEPS_PER_EPOCH * k for k in (1, 2)}  # at most the epoch ends besides
    for step, w in snaps.items():
        assert torch.equal(w, shared.first_weights[step]), step
    # step 0 is the initialisation: the same seed builds the same initial weights
    torch.manual_seed(0)
    fresh: Any = build_model("seed-cnn")
    assert torch.equal(snaps[0], fresh.conv1.weight.detach())
    assert torch.equal(snaps[total], shared.run.model.conv1.weight.detach())
    assert not torch.equal(snaps[0], snaps[total])


def test_no_snapshots_when_turned_off(tmp_path: Path) -> None:
    with one_thread():
        rec = train_recorded(tmp_path / "run", TrainConfig(steps=2, snapshot_every=0))
    assert rec.run.snapshots() == {} and not (tmp_path / "run" / "snapshots").exists()


# --- steps mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [5, 11])
def test_steps_mode_stops_at_exactly_that_many_steps(tmp_path: Path, steps: int) -> None:
    console = _console()
    with one_thread():
        rec = train_recorded(tmp_path / "run", TrainConfig(steps=steps, epochs=50, snapshot_every=4),
                             extra_callbacks=(RichProgress("t", console=console),))
    assert rec.start == (steps, STEPS_PER_EPOCH)
    assert len(rec.step_losses) == steps and [s for s, _ in rec.step_stats] == list(range(1, steps + 1))
    m = rec.run.metrics
    assert m["completed_steps"] == m["total_steps"] == steps and m["complete"] is True
    ends = [min(k * STEPS_PER_EPOCH, steps) for k in range(1, math.ceil(steps / STEPS_PER_EPOCH) + 1)]
    assert [e["step"] for e in m["epochs"]] == ends
    assert m["epochs"][-1]["epoch"] == pytest.approx(steps / STEPS_PER_EPOCH, abs=1e-4)
    assert max(rec.run.snapshots()) == steps
    assert torch.equal(rec.run.snapshots()[steps], rec.run.model.conv1.weight.detach())
    assert rec.ended == 1
    # the progress output printed one line per (partial) epoch
    assert console.file.getvalue().count("test accuracy") == len(ends)


def _console() -> Any:
    from rich.console import Console

    return Console(file=io.StringIO(), force_terminal=False, width=200)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5])
def test_short_runs_with_the_default_schedule(tmp_path: Path, steps: int) -> None:
    # The default one-cycle schedule must cope with any step count (torch's OneCycleLR
    # divides by zero when pct_start * total_steps == 1, i.e. at 4 steps with 0.25).
    train, test = mnist_small()
    with one_thread():
        rec = train_recorded(tmp_path / "run", TrainConfig(steps=steps, snapshot_every=0),
                             data=(train, test.subset(range(10))))
    assert len(rec.step_losses) == steps and rec.run.metrics["completed_steps"] == steps


def test_a_dataset_smaller_than_a_batch_counts_whole_epochs(tmp_path: Path) -> None:
    train, test = mnist_small()
    with one_thread():
        rec = train_recorded(tmp_path / "run", TrainConfig(epochs=2, batch_size=64, snapshot_every=0),
                             data=(train.subset(range(40)), test.subset(range(20))))
    m = rec.run.metrics
    assert m["completed_steps"] == 2
    # each step saw all 40 images: two complete epochs
    assert [e["epoch"] for e in m["epochs"]] == [1, 2]


# --- Ctrl-C --------------------------------------------------------------------------------------


class InterruptAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def on_start(self, total_steps: int, steps_per_epoch: int) -> None:
        pass

    def on_step(self, step: int, stats: dict[str, float]) -> None:
        if step == self.step:
            raise KeyboardInterrupt

    def on_epoch(self, record: dict[str, object]) -> None:
        pass

    def on_end(self) -> None:
        pass


def test_ctrl_c_in_epoch_2_leaves_a_valid_run_of_epoch_1(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with one_thread(), pytest.raises(KeyboardInterrupt) as info:
        train_recorded(out, TrainConfig(epochs=3, snapshot_every=3), extra_callbacks=(InterruptAt(STEPS_PER_EPOCH + 3),))
    rec: Recording = info.value.recording  # type: ignore[attr-defined]  # train_recorded attaches it
    assert len(rec.epoch_states) == 1 and rec.ended == 1
    run = load_run(out)
    assert run.model.training is False
    assert len(run.metrics["epochs"]) == 1 and run.metrics["epochs"][0]["epoch"] == 1
    assert run.metrics["completed_steps"] == STEPS_PER_EPOCH and run.metrics["complete"] is False
    assert run.metrics["epochs"][0] == rec.epoch_records[0]
    assert state_equal(run.model.state_dict(), rec.epoch_states[0])
    # the model had moved on past epoch 1 when it was interrupted; the run did not
    assert not torch.equal(rec.model.conv1.weight.detach(), run.model.get_parameter("conv1.weight"))
    assert max(run.snapshots()) == STEPS_PER_EPOCH
    assert partial_dirs(tmp_path) == []


def test_ctrl_c_in_epoch_1_leaves_no_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with one_thread(), pytest.raises(KeyboardInterrupt):
        train_recorded(out, TrainConfig(epochs=2), extra_callbacks=(InterruptAt(3),))
    assert list(tmp_path.iterdir()) == []


def test_training_refuses_to_replace_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    # A run directory is replaced as a whole; a directory holding anything else must
    # not be (`convlens train --out ~/thesis` would delete the thesis).
    from convlens.errors import ConvlensError

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with one_thread(), pytest.raises(ConvlensError, match=re.escape(str(mine))):
        train_recorded(mine, TrainConfig(steps=1, snapshot_every=0))
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    assert (mine / "thesis.tex").read_text() == "precious"


def test_training_again_replaces_an_earlier_run_when_asked(shared: Recording, tmp_path: Path) -> None:
    import shutil

    from convlens.errors import OutputError

    shutil.copytree(shared.run.path, tmp_path / "run")
    with one_thread():
        with pytest.raises(OutputError, match="already holds a convlens run; add --force"):
            train_recorded(tmp_path / "run", TrainConfig(steps=2, snapshot_every=0, seed=9))
        rec = train_recorded(tmp_path / "run", TrainConfig(steps=2, snapshot_every=0, seed=9), overwrite=True)
    run = load_run(tmp_path / "run")
    assert run.config.seed == 9 and run.metrics["completed_steps"] == 2
    assert state_equal(run.model.state_dict(), rec.run.model.state_dict())
    assert run.snapshots() == {}  # nothing of the old run survives
    assert partial_dirs(tmp_path) == []


# --- devices and configuration -------------------------------------------------------------------


def test_devices_on_a_cpu_only_machine(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"cuda.*no CUDA GPU.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    train, test = mnist_small()
    from convlens.models import get_config
    from convlens.train import train as train_model

    with pytest.raises(ConfigError, match="CUDA"):
        train_model(get_config("seed-cnn"), train, test, tmp_path / "run", TrainConfig(steps=1), device="cuda")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"steps": 0}, "steps must be a positive integer, got 0"),
        ({"epochs": 0}, "epochs must be a positive integer, got 0"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": 2.5}, "batch_size must be a positive integer, got 2.5"),
        ({"eval_batch_size": 0}, "eval_batch_size must be a positive integer"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"optimizer": "lion"}, "unknown optimizer 'lion'"),
        ({"schedule": "step"}, "unknown schedule 'step'"),
        ({"augment_shift": -1}, "augment_shift"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_impossible_training_configs(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        TrainConfig(**kwargs).validate()  # type: ignore[arg-type]  # impossible values on purpose


def test_the_tutorial_recipe() -> None:
    assert (TUTORIAL.optimizer, TUTORIAL.lr, TUTORIAL.batch_size, TUTORIAL.epochs) == ("adam", 1e-3, 64, 3)
    assert TUTORIAL.schedule == "constant" and TUTORIAL.augment_shift == 0 and TUTORIAL.weight_decay == 0.0
    TUTORIAL.validate()
    TrainConfig().validate()


def test_divergence_is_reported(tmp_path: Path) -> None:
    with one_thread(), pytest.raises(ConfigError, match=r"diverged.*--lr"):
        train_recorded(tmp_path / "run", TrainConfig(steps=6, optimizer="sgd", lr=1e4, snapshot_every=0))


# --- progress ------------------------------------------------------------------------------------


def _feed(bar: RichProgress) -> None:
    bar.on_start(4, 2)
    bar.on_step(1, {"loss": 1.25, "acc": 0.5, "ips": 1234.0, "epoch": 1})
    bar.on_epoch({"epoch": 1, "train_loss": 1.25, "test_loss": 1.5, "test_accuracy": 0.5})
    bar.on_end()


def test_progress_is_quiet_off_a_terminal_but_prints_the_epochs(capsys: pytest.CaptureFixture[str]) -> None:
    _feed(RichProgress("seed-cnn"))  # stderr is captured: not a terminal
    out, err = capsys.readouterr()
    assert err == ""
    assert out == "epoch 1: train loss 1.2500, test loss 1.5000, test accuracy 50.00%\n"


def test_progress_on_a_terminal_shows_loss_accuracy_and_speed() -> None:
    from rich.console import Console

    con = Console(file=io.StringIO(), force_terminal=True, width=200)
    _feed(RichProgress("seed-cnn", console=con))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", con.file.getvalue())
    assert "seed-cnn" in text and "loss 1.2500" in text and "acc 50.0%" in text and "1,234 img/s" in text
    assert "epoch 1: train loss 1.2500" in text


def test_one_progress_factory_in_the_package() -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "convlens"
    built = [str(p.relative_to(src)) for p in src.rglob("*.py") if re.search(r"\bProgress\(", p.read_text())]
    assert built == ["_progress.py"]
