"""Run directories: bit-identical round trips, clear errors for broken runs, atomic writes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from safetensors.torch import save_file as real_save_file

from _helpers import partial_dirs, state_equal
from convlens.errors import RunError
from convlens.models import CNNConfig, ConvSpec, build_model, get_config
from convlens.models.run import DataSpec, Run, RunConfig, load_run, load_snapshots, save_run


def run_config(model: CNNConfig, seed: int = 0) -> RunConfig:
    return RunConfig(
        model=model,
        data=DataSpec(name="mnist", source="/somewhere/train-images-idx3-ubyte.gz", classes=tuple("0123456789"),
                      mean=(0.1307,), std=(0.3081,), train_size=512, test_size=256),
        seed=seed,
        train={"epochs": 2, "lr": 0.003, "optimizer": "adamw"},
        versions={"torch": torch.__version__},
    )


METRICS = {"epochs": [{"epoch": 1, "step": 8, "train_loss": 1.5, "test_loss": 1.25, "test_accuracy": 0.5},
                      {"epoch": 2, "step": 16, "train_loss": 0.75, "test_loss": 0.625, "test_accuracy": 0.875}]}


def saved(path: Path, arch: str | CNNConfig = "seed-cnn", seed: int = 0,
          snapshots: dict[int, torch.Tensor] | None = None, overwrite: bool = False) -> tuple[torch.nn.Module, RunConfig]:
    cfg = arch if isinstance(arch, CNNConfig) else get_config(arch)
    torch.manual_seed(seed)
    model = build_model(cfg)
    # make every tensor (BN running stats too) non-trivial so a missed buffer would show
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t).abs() + 0.1)
    rc = run_config(cfg, seed)
    save_run(path, rc, model.state_dict(), METRICS, snapshots, overwrite=overwrite)
    return model, rc


@pytest.mark.parametrize("arch", ["seed-cnn", "small-bn-cnn", "dilated-cnn"])
def test_round_trip_is_bit_identical(tmp_path: Path, arch: str) -> None:
    model, rc = saved(tmp_path / "run", arch)
    run = load_run(tmp_path / "run")
    assert isinstance(run, Run)
    assert run.model.training is False and all(not m.training for m in run.model.modules())
    assert run.config == rc and run.config.model == rc.model
    assert run.metrics == METRICS
    assert state_equal(run.model.state_dict(), model.state_dict())
    x = torch.randn(5, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        assert torch.equal(run.model(x), model(x))
    assert run.input_shape == (1, 28, 28)
    assert run.test_accuracy == 0.875
    assert run.dataset_name == "mnist"
    assert run.snapshots() == {} and run.snapshot_layer == ""


def test_files_are_plain_json_and_safetensors(tmp_path: Path) -> None:
    model, _ = saved(tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model"]["convs"][0] == {"out_channels": 16, "kernel_size": 5, "stride": 1, "padding": 2,
                                        "dilation": 1, "pool": 2, "batch_norm": False, "dropout": 0.0}
    assert cfg["seed"] == 0 and cfg["data"]["name"] == "mnist" and cfg["train"]["lr"] == 0.003
    assert cfg["versions"]["torch"] == torch.__version__
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == METRICS
    # the weights read back with safetensors itself, independently of load_run
    assert state_equal(load_file(str(tmp_path / "run" / "model.safetensors")), model.state_dict())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "metrics.json", "model.safetensors"]


def test_snapshots_round_trip(tmp_path: Path) -> None:
    snaps = {0: torch.randn(16, 1, 5, 5), 50: torch.randn(16, 1, 5, 5), 117: torch.randn(16, 1, 5, 5)}
    saved(tmp_path / "run", snapshots=snaps)
    layer, back = load_snapshots(tmp_path / "run")
    assert layer == "conv1" and sorted(back) == [0, 50, 117]
    assert all(torch.equal(back[s], snaps[s]) for s in snaps)
    run = load_run(tmp_path / "run")
    assert run.snapshot_layer == "conv1" and sorted(run.snapshots()) == [0, 50, 117]


def test_corrupt_snapshots_give_a_run_error(tmp_path: Path) -> None:
    saved(tmp_path / "run", snapshots={0: torch.randn(16, 1, 5, 5)})
    f = tmp_path / "run" / "snapshots" / "filters.safetensors"
    f.write_bytes(b"garbage\n")
    run = load_run(tmp_path / "run")  # the model itself is fine
    with pytest.raises(RunError) as info:
        run.snapshots()
    assert str(f) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(RunError, match=re.escape(str(f))):
        load_snapshots(tmp_path / "run")


def test_a_custom_colour_config_round_trips(tmp_path: Path) -> None:
    cfg = CNNConfig((ConvSpec(6, 3, padding=1, pool=2, batch_norm=True), ConvSpec(4, 3, stride=2)),
                    in_channels=3, input_size=(20, 24), num_classes=3)
    model, _ = saved(tmp_path / "run", cfg)
    run = load_run(tmp_path / "run")
    assert run.config.model == cfg and run.input_shape == (3, 20, 24)
    x = torch.randn(2, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(run.model(x), model.eval()(x))


# --- broken runs -------------------------------------------------------------------------------


def expect_run_error(path: Path, *fragments: str) -> str:
    with pytest.raises(RunError) as info:
        load_run(path)
    msg = str(info.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_missing_directory(tmp_path: Path) -> None:
    expect_run_error(tmp_path / "nope", str(tmp_path / "nope"), "does not exist", "convlens train")
    (tmp_path / "file").write_text("x")
    expect_run_error(tmp_path / "file", str(tmp_path / "file"))


@pytest.mark.parametrize("name", ["config.json", "metrics.json", "model.safetensors"])
def test_missing_file(tmp_path: Path, name: str) -> None:
    saved(tmp_path / "run")
    (tmp_path / "run" / name).unlink()
    expect_run_error(tmp_path / "run", name, str(tmp_path / "run"))


@pytest.mark.parametrize("name", ["config.json", "metrics.json"])
def test_corrupt_json(tmp_path: Path, name: str) -> None:
    saved(tmp_path / "run")
    (tmp_path / "run" / name).write_text('{"epochs": [1, 2')
    expect_run_error(tmp_path / "run", str(tmp_path / "run" / name))


def test_json_that_is_not_an_object(tmp_path: Path) -> None:
    saved(tmp_path / "run")
    (tmp_path / "run" / "metrics.json").write_text("[1, 2, 3]")
    expect_run_error(tmp_path / "run", str(tmp_path / "run" / "metrics.json"), "JSON object")


def test_config_without_a_model(tmp_path: Path) -> None:
    saved(tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    del cfg["model"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    expect_run_error(tmp_path / "run", str(tmp_path / "run" / "config.json"), "not a valid run config")


def test_corrupt_weights(tmp_path: Path) -> None:
    saved(tmp_path / "run")
    (tmp_path / "run" / "model.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    expect_run_error(tmp_path / "run", str(tmp_path / "run" / "model.safetensors"))


def test_weights_of_another_architecture(tmp_path: Path) -> None:
    saved(tmp_path / "run", "seed-cnn")
    saved(tmp_path / "other", "small-bn-cnn")
    shutil.copy(tmp_path / "other" / "model.safetensors", tmp_path / "run" / "model.safetensors")
    expect_run_error(tmp_path / "run", str(tmp_path / "run" / "model.safetensors"), "does not match",
                     str(tmp_path / "run" / "config.json"))


def test_weights_with_a_wrong_shape(tmp_path: Path) -> None:
    # The message must say *what* does not match: torch's first line alone
    # ("Error(s) in loading state_dict for SmallCNN:") names no tensor.
    saved(tmp_path / "run")
    state = load_file(str(tmp_path / "run" / "model.safetensors"))
    state["fc.weight"] = torch.zeros(10, 100)
    real_save_file(state, str(tmp_path / "run" / "model.safetensors"))
    expect_run_error(tmp_path / "run", "does not match", "fc.weight")


# --- atomic writes -------------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_save_leaves_the_old_run_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                exc: BaseException) -> None:
    old_model, _ = saved(tmp_path / "run", seed=1)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}

    def boom(*args: object, **kwargs: object) -> None:
        raise exc

    monkeypatch.setattr("safetensors.torch.save", boom)
    torch.manual_seed(2)
    new = build_model("seed-cnn")
    with pytest.raises(type(exc)):
        save_run(tmp_path / "run", run_config(get_config("seed-cnn"), seed=2), new.state_dict(), {"epochs": []},
                 overwrite=True)
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    assert after == before
    assert partial_dirs(tmp_path) == []
    run = load_run(tmp_path / "run")
    assert run.config.seed == 1 and state_equal(run.model.state_dict(), old_model.state_dict())


def test_a_failed_first_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_run(tmp_path / "run", run_config(get_config("seed-cnn")), build_model("seed-cnn").state_dict(), METRICS)
    assert list(tmp_path.iterdir()) == []


def test_saving_again_replaces_the_run_only_when_asked(tmp_path: Path) -> None:
    from convlens.errors import OutputError

    saved(tmp_path / "run", seed=1, snapshots={0: torch.zeros(16, 1, 5, 5)})
    with pytest.raises(OutputError, match="already holds a convlens run; add --force"):
        saved(tmp_path / "run", seed=2)
    assert load_run(tmp_path / "run").config.seed == 1
    new, _ = saved(tmp_path / "run", seed=2, overwrite=True)
    run = load_run(tmp_path / "run")
    assert run.config.seed == 2 and state_equal(run.model.state_dict(), new.state_dict())
    assert run.snapshots() == {}  # nothing of the old run survives
    assert partial_dirs(tmp_path) == []
