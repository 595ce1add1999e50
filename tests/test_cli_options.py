"""The options every command shares come from one place: the input options (one decorator,
one class type), --device on every command that runs a model, --method from the registry."""

from __future__ import annotations

import click
import pytest

from convlens.cli import app
from convlens.cli._common import LabelType

INPUT_OPTIONS = ["--digit", "--index", "--image", "--nth", "--split"]


def _command(path: str) -> click.Command:
    cmd: click.Command = app
    for part in path.split():
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[part]
    return cmd


def _options(path: str) -> dict[str, click.Option]:
    return {opt: p for p in _command(path).params if isinstance(p, click.Option) for opt in p.opts}


@pytest.mark.parametrize("path", ["maps", "cam", "faithfulness", "stats", "topk", "layers", "train", "demo",
                                  "conv shape", "conv explain", "conv apply", "conv panel"])
def test_every_command_that_runs_a_model_takes_device(path: str) -> None:
    device = _options(path)["--device"]
    assert isinstance(device.type, click.Choice) and list(device.type.choices) == ["auto", "cpu", "cuda", "mps"]


def test_the_input_options_are_one_decorator() -> None:
    def shape(path: str) -> list[tuple[str, str, str | None]]:
        opts = _options(path)
        return [(name, type(opts[name].type).__name__, opts[name].help) for name in INPUT_OPTIONS]

    first = shape("maps")
    for path in ("cam", "conv explain", "conv apply", "conv panel"):
        assert shape(path) == first, path
    assert isinstance(_options("maps")["--digit"].type, LabelType)
    assert "--matrix" in _options("conv explain") and "--matrix" not in _options("maps")


def test_a_class_is_a_label_index_or_a_name() -> None:
    t = LabelType()
    assert t.convert("7", None, None) == 7 and t.convert(" 12 ", None, None) == 12
    assert t.convert("Sneaker", None, None) == "Sneaker"
