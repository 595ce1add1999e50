"""Models: the seed CNN's exact layout, the builder's shapes against a real forward pass,
impossible configurations, and every registered architecture (parametrised over the
registry, timm-style)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from convlens.errors import ConfigError
from convlens.models import (
    CNNConfig,
    ConvSpec,
    build_model,
    feature_shapes,
    get_config,
    list_models,
    register,
)

# --- seed-cnn ------------------------------------------------------------------------------------


def test_seed_cnn_has_exactly_the_tutorial_layers() -> None:
    model: Any = build_model("seed-cnn")
    children = [(name, type(m)) for name, m in model.named_children()]
    assert children == [
        ("conv1", nn.Conv2d), ("relu1", nn.ReLU), ("pool1", nn.MaxPool2d),
        ("conv2", nn.Conv2d), ("relu2", nn.ReLU), ("pool2", nn.MaxPool2d), ("fc", nn.Linear),
    ]
    c1, c2, fc = model.conv1, model.conv2, model.fc
    assert (c1.in_channels, c1.out_channels, c1.kernel_size, c1.padding, c1.stride) == (1, 16, (5, 5), (2, 2), (1, 1))
    assert (c2.in_channels, c2.out_channels, c2.kernel_size, c2.padding, c2.stride) == (16, 32, (5, 5), (2, 2), (1, 1))
    assert tuple(c1.weight.shape) == (16, 1, 5, 5) and tuple(c2.weight.shape) == (32, 16, 5, 5)
    assert (fc.in_features, fc.out_features) == (1568, 10) and 1568 == 32 * 7 * 7
    for pool in (model.pool1, model.pool2):
        assert pool.kernel_size == 2 and pool.stride == 2
    # named_modules: the model itself plus exactly these seven, no hidden extras
    assert [n for n, _ in model.named_modules()] == ["", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "fc"]
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == (16 * 25 + 16) + (32 * 16 * 25 + 32) + (1568 * 10 + 10)


def test_seed_cnn_forward_equals_the_tutorial_written_out() -> None:
    import torch.nn.functional as F

    torch.manual_seed(0)
    model: Any = build_model("seed-cnn").eval()
    x = torch.randn(3, 1, 28, 28)
    h = F.max_pool2d(F.relu(F.conv2d(x, model.conv1.weight, model.conv1.bias, padding=2)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, model.conv2.weight, model.conv2.bias, padding=2)), 2)
    expected = F.linear(h.reshape(3, -1), model.fc.weight, model.fc.bias)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
    assert feature_shapes(get_config("seed-cnn")) == [(16, 14, 14), (32, 7, 7)]


# --- the builder against a real forward ----------------------------------------------------------


def _torch_stage_shapes(cfg: CNNConfig) -> list[tuple[int, int, int]] | None:
    """Independent oracle: the shapes plain torch layers produce, or None if torch refuses."""
    x = torch.zeros(1, cfg.in_channels, *cfg.input_size)
    shapes = []
    try:
        for c in cfg.convs:
            x = nn.Conv2d(x.shape[1], c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation)(x)
            if c.pool:
                x = nn.MaxPool2d(c.pool)(x)
            if min(x.shape[2:]) < 1:
                return None
            shapes.append(tuple(int(s) for s in x.shape[1:]))
    except RuntimeError:
        return None
    return shapes  # type: ignore[return-value]


conv_specs = st.builds(
    ConvSpec,
    out_channels=st.integers(1, 6),
    kernel_size=st.integers(1, 7),
    stride=st.integers(1, 3),
    padding=st.integers(0, 3),
    dilation=st.integers(1, 3),
    pool=st.sampled_from([0, 0, 2, 3]),
    batch_norm=st.booleans(),
    dropout=st.sampled_from([0.0, 0.25]),
)
configs = st.builds(
    CNNConfig,
    convs=st.lists(conv_specs, min_size=1, max_size=3).map(tuple),
    in_channels=st.integers(1, 3),
    input_size=st.tuples(st.integers(4, 24), st.integers(4, 24)),
    num_classes=st.integers(1, 5),
    classifier_dropout=st.sampled_from([0.0, 0.5]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs)
def test_builder_agrees_with_torch_on_every_config(cfg: CNNConfig) -> None:
    expected = _torch_stage_shapes(cfg)
    if expected is None:  # torch cannot run it: the builder must refuse it up front
        with pytest.raises(ConfigError):
            build_model(cfg)
        return
    assert feature_shapes(cfg) == expected
    model: Any = build_model(cfg).eval()
    # the real forward, stage by stage: the output after each conv stage
    x = torch.randn(2, cfg.in_channels, *cfg.input_size)
    seen = []
    children = dict(model.named_children())
    for i in range(1, len(cfg.convs) + 1):
        for name in (f"conv{i}", f"bn{i}", f"relu{i}", f"pool{i}", f"drop{i}"):
            if name in children:
                x = children[name](x)
        seen.append(tuple(int(s) for s in x.shape[1:]))
    assert seen == expected
    out = model(torch.randn(2, cfg.in_channels, *cfg.input_size))
    assert tuple(out.shape) == (2, cfg.num_classes)
    c, h, w = expected[-1]
    assert model.fc.in_features == c * h * w
    # the optional layers are there exactly when asked for
    for i, spec in enumerate(cfg.convs, start=1):
        assert (f"bn{i}" in children) == spec.batch_norm
        assert (f"pool{i}" in children) == bool(spec.pool)
        assert (f"drop{i}" in children) == bool(spec.dropout)
        conv = children[f"conv{i}"]
        assert (conv.stride, conv.padding, conv.dilation) == ((spec.stride,) * 2, (spec.padding,) * 2, (spec.dilation,) * 2)
    assert ("dropout" in children) == bool(cfg.classifier_dropout)


@pytest.mark.parametrize(
    ("cfg", "fragments"),
    [
        (CNNConfig((ConvSpec(4, kernel_size=9, padding=0),), input_size=(8, 8)),
         ["conv layer 1", "kernel spans 9", "8×8", "smaller kernel"]),
        (CNNConfig((ConvSpec(4, kernel_size=3, dilation=5, padding=1),), input_size=(8, 8)),
         ["conv layer 1", "kernel spans 11", "dilation 5", "10×10"]),
        (CNNConfig((ConvSpec(4, 3, padding=1, pool=2), ConvSpec(4, 3, padding=1, pool=8)), input_size=(12, 12)),
         ["conv layer 2", "pool window 8", "6×6", "smaller pool"]),
        (CNNConfig((ConvSpec(0),)), ["conv layer 1", "out_channels must be at least 1, got 0"]),
        (CNNConfig((ConvSpec(4, kernel_size=0),)), ["kernel_size must be at least 1, got 0"]),
        (CNNConfig((ConvSpec(4, stride=0),)), ["stride must be at least 1, got 0"]),
        (CNNConfig((ConvSpec(4, dilation=0),)), ["dilation must be at least 1, got 0"]),
        (CNNConfig((ConvSpec(4, padding=-1),)), ["padding must be at least 0, got -1"]),
        (CNNConfig((ConvSpec(4, pool=-2),)), ["pool must be at least 0, got -2"]),
        (CNNConfig((ConvSpec(4, dropout=1.0),)), ["dropout must be in [0, 1), got 1.0"]),
        (CNNConfig((ConvSpec(4),), in_channels=0), ["in_channels must be at least 1, got 0"]),
        (CNNConfig((ConvSpec(4),), num_classes=0), ["num_classes must be at least 1, got 0"]),
        (CNNConfig(()), ["at least one conv layer"]),
    ],
)
def test_impossible_configs_raise_a_clear_config_error(cfg: CNNConfig, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        build_model(cfg)
    msg = str(info.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg
    assert isinstance(info.value, ValueError)  # ValueError-compatible for library users


def test_downsampling_below_the_kernel_is_caught_at_the_layer_that_fails() -> None:
    # 28 -> conv stride 4 -> 7 -> pool 2 -> 3; the second 5x5 kernel (no padding) cannot fit
    cfg = CNNConfig((ConvSpec(8, 3, stride=4, padding=1, pool=2), ConvSpec(8, 5, padding=0)))
    assert _torch_stage_shapes(cfg) is None
    with pytest.raises(ConfigError, match=r"conv layer 2: kernel spans 5 pixels .* only 3×3"):
        feature_shapes(cfg)


def test_config_round_trips_through_json() -> None:
    cfg = CNNConfig(
        (ConvSpec(8, 3, stride=2, padding=1, dilation=1, pool=2, batch_norm=True, dropout=0.1),
         ConvSpec(4, 5, padding=2)),
        in_channels=3, input_size=(32, 30), num_classes=7, classifier_dropout=0.3, arch="custom",
    )
    back = CNNConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert isinstance(back.convs, tuple) and isinstance(back.input_size, tuple)


# --- the registry --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(list_models()))
def test_every_registered_model_builds_and_runs(name: str) -> None:
    assert list_models()[name].strip()  # every entry has a description
    cfg = get_config(name)
    assert isinstance(cfg, CNNConfig) and cfg.arch == name
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.randn(4, 1, 28, 28)
    out = model(x)
    assert tuple(out.shape) == (4, 10) and torch.isfinite(out).all()
    assert out.std() > 0  # the head sees the input: not a constant output
    # a gradient reaches the first layer
    model.train()
    model(x).sum().backward()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    # other inputs: colour images of another size, other class counts
    other = build_model(name, in_channels=3, input_size=(32, 36), num_classes=5).eval()
    assert tuple(other(torch.randn(2, 3, 32, 36)).shape) == (2, 5)
    assert feature_shapes(get_config(name, in_channels=3, input_size=(32, 36), num_classes=5)) == \
        _torch_stage_shapes(get_config(name, in_channels=3, input_size=(32, 36), num_classes=5))


def test_registry_lists_the_core_architectures() -> None:
    assert {"seed-cnn", "small-bn-cnn", "dilated-cnn"} <= set(list_models())


def test_unknown_architecture_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        get_config("seed_cnn")
    msg = str(info.value)
    assert "unknown architecture 'seed_cnn'" in msg and "did you mean 'seed-cnn'" in msg
    for name in list_models():
        assert name in msg


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("seed-cnn", "again")(lambda **kw: get_config("seed-cnn", **kw))
    assert list_models()["seed-cnn"] != "again"


def test_build_model_accepts_a_config_directly() -> None:
    cfg = CNNConfig((ConvSpec(3, 3, padding=0, pool=2),), input_size=(10, 10), num_classes=4)
    model: Any = build_model(cfg)
    assert model.fc.in_features == 3 * 4 * 4
    assert tuple(model(torch.zeros(1, 1, 10, 10)).shape) == (1, 4)


def test_build_model_refuses_settings_a_config_already_holds() -> None:
    cfg = get_config("seed-cnn", num_classes=4)
    assert build_model(cfg).fc.out_features == 4
    with pytest.raises(ConfigError, match="set them in the config"):
        build_model(cfg, num_classes=7)
