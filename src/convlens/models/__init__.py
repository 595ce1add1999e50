"""Models: the seed tutorial CNN, a configurable small-CNN builder, a name registry, runs.

>>> from convlens.models import build_model
>>> model = build_model("seed-cnn")
>>> [name for name, _ in model.named_children()][:4]
['conv1', 'relu1', 'pool1', 'conv2']
"""

from __future__ import annotations

from torch import nn

from convlens.models.builder import build_cnn, feature_shapes
from convlens.models.config import CNNConfig, ConvSpec
from convlens.models.registry import get_config, list_models, register


def build_model(arch: str | CNNConfig, **kwargs: object) -> nn.Module:
    """Build a registered architecture by name, or any :class:`CNNConfig`.

    Keyword arguments (``in_channels``, ``input_size``, ``num_classes``) go to the
    registered config function.
    """
    cfg = arch if isinstance(arch, CNNConfig) else get_config(arch, **kwargs)  # type: ignore[arg-type]
    return build_cnn(cfg)


__all__ = [
    "CNNConfig", "ConvSpec", "build_cnn", "build_model", "feature_shapes", "get_config",
    "list_models", "register",
]
