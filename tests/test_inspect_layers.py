"""convlens.layers: one dry run lists every module with its real output shape."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console
from torch import nn

import convlens
from convlens.errors import ConfigError, LayerError
from convlens.inspect import layers
from zoo import (
    FunctionalCNN,
    ResNet18,
    ScriptableCNN,
    SeedCNN,
    SharedCNN,
    assert_same_state,
    model_state,
    nested_sequential,
    seeded,
)


def _shapes_by_hand(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Oracle: run each module's forward with a plain hook-free recording via wrapping."""
    out: dict[str, tuple[int, ...]] = {}
    originals = {}
    for name, m in model.named_modules():
        if not name:
            continue
        originals[name] = m.forward

        def wrapped(*a: object, _f=m.forward, _n=name, **k: object) -> torch.Tensor:
            y = _f(*a, **k)
            out.setdefault(_n, tuple(y.shape[1:]))
            return y

        m.forward = wrapped  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for name, m in model.named_modules():
            if name:
                del m.forward
    return out


def test_top_level_name() -> None:
    assert convlens.layers is layers


@pytest.mark.parametrize(
    ("make", "shape", "target"),
    [
        (SeedCNN, (1, 28, 28), "pool2"),
        (lambda: ResNet18(num_classes=5), (3, 64, 64), "layer4"),
        (FunctionalCNN, (1, 8, 8), "conv2"),
        (SharedCNN, (1, 8, 8), "block"),
        (nested_sequential, (1, 8, 8), "0"),
    ],
)
def test_shapes_params_convs_and_target(make: object, shape: tuple[int, ...], target: str) -> None:
    model = seeded(make())  # type: ignore[operator]
    table = layers(model, shape)
    expected = _shapes_by_hand(model, torch.zeros(1, *shape))
    modules = dict(model.named_modules())
    assert table.names == [n for n in modules if n]
    for row in table:
        assert row.output_shape == expected.get(row.name), row.name
        assert row.params == sum(p.numel() for p in modules[row.name].parameters())
        assert row.is_conv == isinstance(modules[row.name], nn.Conv2d)
        assert row.depth == row.name.count(".")
    assert table.total_params == sum(p.numel() for p in model.parameters())
    assert table.target == target
    assert table[target].is_spatial
    assert table.input_shape == shape


def test_seed_cnn_rows_and_rendering() -> None:
    table = layers(SeedCNN(), (1, 28, 28))
    assert [(r.name, r.output_shape) for r in table] == [
        ("conv1", (16, 28, 28)),
        ("relu1", (16, 28, 28)),
        ("pool1", (16, 14, 14)),
        ("conv2", (32, 14, 14)),
        ("relu2", (32, 14, 14)),
        ("pool2", (32, 7, 7)),
        ("fc", (10,)),
    ]
    assert table.convs == ["conv1", "conv2"]
    assert table["conv2"].params == 16 * 32 * 25 + 32
    text = str(table)
    assert "← CAM target" in text.splitlines()[7]  # pool2's row
    assert "28,938 parameters" in text
    console = Console(file=io.StringIO(), width=120)
    console.print(table)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "conv2" in shown and "CAM target: pool2" in shown
    with pytest.raises(LayerError, match="did you mean 'conv2'"):
        table["conv3"]


def test_shared_and_unused_modules_are_marked() -> None:
    m = SharedCNN()
    m.spare = nn.Linear(2, 2)
    table = layers(m, (1, 6, 6))
    assert table["block.0"].calls == 2
    assert table["spare"].calls == 0 and table["spare"].output_shape is None
    assert "called 2×" in str(table) and "not called" in str(table)


def test_dry_run_leaves_a_training_model_alone() -> None:
    m = seeded(ResNet18(num_classes=3)).train()
    m.layer1[0].bn1.eval()  # mixed flags must come back exactly
    before = model_state(m)
    layers(m, (3, 32, 32))
    assert_same_state(before, model_state(m))  # BatchNorm running stats untouched


def test_wrong_input_shape_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"could not run on an input of shape \(3, 28, 28\)"):
        layers(SeedCNN(), (3, 28, 28))
    with pytest.raises(ConfigError, match="positive sizes"):
        layers(SeedCNN(), (1, 0, 28))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_modules_are_listed_without_hooks() -> None:
    scripted = torch.jit.script(ScriptableCNN())
    table = layers(nn.Sequential(nn.Identity(), scripted), (1, 5, 5))
    assert table["0"].output_shape == (1, 5, 5)
    assert table["1"].type.endswith("(TorchScript)") and table["1"].output_shape is None
