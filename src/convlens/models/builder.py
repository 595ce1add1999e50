"""Build a small CNN from a :class:`CNNConfig`, rejecting impossible shapes up front."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from convlens.errors import ConfigError
from convlens.models.config import CNNConfig


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def feature_shapes(cfg: CNNConfig) -> list[tuple[int, int, int]]:
    """Output shape (C, H, W) after each conv stage; raises ConfigError if one is impossible."""
    if cfg.in_channels < 1:
        raise ConfigError(f"in_channels must be at least 1, got {cfg.in_channels}")
    if cfg.num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {cfg.num_classes}")
    if not cfg.convs:
        raise ConfigError("a CNN needs at least one conv layer: give convs=(ConvSpec(...), ...)")
    h, w = cfg.input_size
    shapes = []
    for i, c in enumerate(cfg.convs, start=1):
        where = f"conv layer {i}"
        for pname, value, low in (
            ("out_channels", c.out_channels, 1),
            ("kernel_size", c.kernel_size, 1),
            ("stride", c.stride, 1),
            ("dilation", c.dilation, 1),
            ("padding", c.padding, 0),
            ("pool", c.pool, 0),
        ):
            if value < low:
                raise ConfigError(f"{where}: {pname} must be at least {low}, got {value}")
        if not 0.0 <= c.dropout < 1.0:
            raise ConfigError(f"{where}: dropout must be in [0, 1), got {c.dropout}")
        span = c.dilation * (c.kernel_size - 1) + 1
        if span > min(h, w) + 2 * c.padding:
            raise ConfigError(
                f"{where}: kernel spans {span} pixels (kernel_size {c.kernel_size}, dilation "
                f"{c.dilation}) but the padded input is only {h + 2 * c.padding}×{w + 2 * c.padding}; "
                "use a smaller kernel or dilation, more padding, or less downsampling before it"
            )
        h = _conv_out(h, c.kernel_size, c.stride, c.padding, c.dilation)
        w = _conv_out(w, c.kernel_size, c.stride, c.padding, c.dilation)
        if c.pool:
            if c.pool > min(h, w):
                raise ConfigError(
                    f"{where}: pool window {c.pool} is larger than its {h}×{w} input; "
                    "use a smaller pool or remove a downsampling step"
                )
            h, w = h // c.pool, w // c.pool
        shapes.append((c.out_channels, h, w))
    return shapes


class SmallCNN(nn.Module):
    """Conv stages then one linear layer; the flatten happens in ``forward``.

    Children are named ``conv1``, ``bn1``, ``relu1``, ``pool1``, ``drop1``, ``conv2``,
    …, ``dropout``, ``fc`` (only those the config asks for), so seed-cnn has exactly
    the tutorial's names: conv1, relu1, pool1, conv2, relu2, pool2, fc.
    """

    def __init__(self, cfg: CNNConfig, layers: OrderedDict[str, nn.Module]) -> None:
        super().__init__()
        self.config = cfg
        for name, module in layers.items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *stages, head = self.children()
        for module in stages:
            x = module(x)  # (N, C, H, W) through the conv stages
        return head(torch.flatten(x, 1))  # (N, C*H*W) -> (N, classes)


def build_cnn(cfg: CNNConfig) -> SmallCNN:
    """Build the network described by ``cfg`` (see :class:`SmallCNN` for the names)."""
    shapes = feature_shapes(cfg)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_ch = cfg.in_channels
    for i, c in enumerate(cfg.convs, start=1):
        layers[f"conv{i}"] = nn.Conv2d(
            in_ch, c.out_channels, c.kernel_size, stride=c.stride, padding=c.padding,
            dilation=c.dilation,
        )
        if c.batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(c.out_channels)
        layers[f"relu{i}"] = nn.ReLU()
        if c.pool:
            layers[f"pool{i}"] = nn.MaxPool2d(c.pool)
        if c.dropout:
            layers[f"drop{i}"] = nn.Dropout2d(c.dropout)
        in_ch = c.out_channels
    if cfg.classifier_dropout:
        layers["dropout"] = nn.Dropout(cfg.classifier_dropout)
    c_out, h, w = shapes[-1]
    layers["fc"] = nn.Linear(c_out * h * w, cfg.num_classes)
    return SmallCNN(cfg, layers)
