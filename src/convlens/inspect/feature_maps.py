"""Feature maps of one layer for one input, at a chosen stage (conv, relu or pool)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import ConfigError, LayerError, unknown_name
from convlens.inspect.capture import capture

Stage = Literal["conv", "relu", "pool"]
STAGES: tuple[Stage, ...] = ("conv", "relu", "pool")

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)


@dataclass
class FeatureMaps:
    """Maps (N, C, H, W) read at ``module`` for ``layer`` at ``stage``.

    ``computed`` is True when the relu stage had no module of its own (a model that
    applies its activation as a function) and ReLU was applied to the conv output here.
    """

    layer: str
    stage: Stage
    module: str
    maps: torch.Tensor
    computed: bool = False


def stage_module(model: nn.Module, layer: str, stage: Stage) -> str | None:
    """Name of the module that produces ``stage`` of ``layer``, or None if there is none.

    ``conv`` is ``layer`` itself. ``relu``/``pool`` is the first activation/pooling module
    that follows ``layer`` in registration order before the next conv layer (for
    convlens's own models: ``relu1``/``pool1`` after ``conv1``).
    """
    names = [n for n, _ in model.named_modules() if n]
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        raise LayerError(unknown_name("layer", layer, names))
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}: use conv, relu or pool")
    if stage == "conv":
        return layer
    kinds = _ACTIVATIONS if stage == "relu" else _POOLS
    after = names[names.index(layer) + 1:]
    for name in after:
        module = modules[name]
        if isinstance(module, nn.Conv2d) or name.startswith(layer + "."):
            if isinstance(module, nn.Conv2d):
                return None
            continue
        if isinstance(module, kinds):
            return name
    return None


def feature_maps(model: nn.Module, x: torch.Tensor, layer: str, stage: Stage = "conv") -> FeatureMaps:
    """Run ``model`` on ``x`` (N, C, H, W) and return the maps of ``layer`` at ``stage``.

    The model is left as it was (see :func:`convlens.capture`).

    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2))
    >>> fm = feature_maps(net, torch.zeros(1, 1, 8, 8), "0", stage="relu")
    >>> fm.module, tuple(fm.maps.shape)
    ('1', (1, 4, 6, 6))
    """
    name = stage_module(model, layer, stage)
    computed = False
    if name is None:
        if stage == "pool":
            raise ConfigError(f"layer {layer!r} is not followed by a pooling layer; use --stage conv or relu")
        name, computed = layer, True
    with torch.no_grad(), capture(model, [name]) as cap:
        try:
            model(x)
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(
                f"the model could not run on an input of shape {tuple(x.shape[1:])}: {first}; "
                "give an input the model accepts (--input-shape C,H,W for --model)"
            ) from exc
    value = cap[name]
    maps = value[0] if isinstance(value, list) else value
    if computed:
        maps = F.relu(maps)
    if maps.dim() != 4:
        raise LayerError(
            f"layer {name!r} outputs shape {tuple(maps.shape)}, not feature maps (N, C, H, W); "
            "choose a convolutional or pooling layer"
        )
    return FeatureMaps(layer=layer, stage=stage, module=name, maps=maps, computed=computed)
