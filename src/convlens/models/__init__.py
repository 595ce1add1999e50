"""Models: the seed tutorial CNN, a configurable small-CNN builder, a name registry, runs.

>>> from convlens.models import build_model
>>> model = build_model("seed-cnn")
>>> [name for name, _ in model.named_children()][:4]
['conv1', 'relu1', 'pool1', 'conv2']
"""

from __future__ import annotations

from torch import nn

from convlens.errors import ConfigError
from convlens.models.builder import build_cnn, feature_shapes
from convlens.models.config import CNNConfig, ConvSpec
from convlens.models.registry import get_config, list_models, register


def build_model(
    arch: str | CNNConfig,
    *,
    in_channels: int = 1,
    input_size: tuple[int, int] = (28, 28),
    num_classes: int = 10,
) -> nn.Module:
    """Build a registered architecture by name, or any :class:`CNNConfig`.

    The keyword arguments go to the registered config function; a :class:`CNNConfig`
    already holds them, so with one they must be left at their defaults.
    """
    if isinstance(arch, CNNConfig):
        if (in_channels, input_size, num_classes) != (1, (28, 28), 10):
            raise ConfigError("build_model(CNNConfig(...)) takes no in_channels, input_size or num_classes; set them in the config")
        return build_cnn(arch)
    cfg = get_config(arch, in_channels=in_channels, input_size=input_size, num_classes=num_classes)
    return build_cnn(cfg)


__all__ = [
    "CNNConfig", "ConvSpec", "build_cnn", "build_model", "feature_shapes", "get_config",
    "list_models", "register",
]
