"""A registry of named architectures (cf. timm's ``register_model``/``list_models``)."""

from __future__ import annotations

from collections.abc import Callable

from convlens.errors import ConfigError, unknown_name
from convlens.models.config import CNNConfig, ConvSpec

_REGISTRY: dict[str, Callable[..., CNNConfig]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str) -> Callable[[Callable[..., CNNConfig]], Callable[..., CNNConfig]]:
    """Register a function that returns the :class:`CNNConfig` of an architecture."""

    def deco(fn: Callable[..., CNNConfig]) -> Callable[..., CNNConfig]:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is already registered")
        _REGISTRY[name] = fn
        _DESCRIPTIONS[name] = description
        return fn

    return deco


def list_models() -> dict[str, str]:
    """Registered architecture names with their one-line descriptions."""
    return dict(_DESCRIPTIONS)


def get_config(name: str, *, in_channels: int = 1, input_size: tuple[int, int] = (28, 28),
               num_classes: int = 10) -> CNNConfig:
    try:
        fn = _REGISTRY[name]
    except KeyError:
        raise ConfigError(unknown_name("architecture", name, _REGISTRY)) from None
    return fn(in_channels=in_channels, input_size=input_size, num_classes=num_classes)


@register("seed-cnn", "the tutorial network: conv1 16×5×5 → pool → conv2 32×5×5 → pool → fc")
def seed_cnn(*, in_channels: int = 1, input_size: tuple[int, int] = (28, 28),
             num_classes: int = 10) -> CNNConfig:
    return CNNConfig(
        convs=(ConvSpec(16, kernel_size=5, padding=2, pool=2), ConvSpec(32, kernel_size=5, padding=2, pool=2)),
        in_channels=in_channels, input_size=input_size, num_classes=num_classes, arch="seed-cnn",
    )


@register("small-bn-cnn", "three 3×3 conv stages with batch norm and dropout")
def small_bn_cnn(*, in_channels: int = 1, input_size: tuple[int, int] = (28, 28),
                 num_classes: int = 10) -> CNNConfig:
    return CNNConfig(
        convs=(
            ConvSpec(32, 3, padding=1, batch_norm=True),
            ConvSpec(32, 3, padding=1, pool=2, batch_norm=True, dropout=0.1),
            ConvSpec(64, 3, padding=1, pool=2, batch_norm=True, dropout=0.1),
        ),
        in_channels=in_channels, input_size=input_size, num_classes=num_classes,
        classifier_dropout=0.2, arch="small-bn-cnn",
    )


@register("dilated-cnn", "two dilated 3×3 conv stages: a large receptive field without pooling")
def dilated_cnn(*, in_channels: int = 1, input_size: tuple[int, int] = (28, 28),
                num_classes: int = 10) -> CNNConfig:
    return CNNConfig(
        convs=(ConvSpec(16, 3, padding=2, dilation=2), ConvSpec(32, 3, stride=2, padding=2, dilation=2, pool=2)),
        in_channels=in_channels, input_size=input_size, num_classes=num_classes, arch="dilated-cnn",
    )


@register("four-conv-cnn", "four 3×3 conv layers (32, 32, 64, 64; pooling after the 2nd and 4th): for layer-by-layer "
          "comparisons")
def four_conv_cnn(*, in_channels: int = 1, input_size: tuple[int, int] = (28, 28),
                  num_classes: int = 10) -> CNNConfig:
    # 32/64 channels rather than 16/32: at 16/32, five seeds' ReLU outputs are too alike across
    # neighbouring layers for linear CKA to tell them apart reliably (docs/compare.md, Kornblith's check)
    return CNNConfig(
        convs=(ConvSpec(32, 3, padding=1), ConvSpec(32, 3, padding=1, pool=2),
               ConvSpec(64, 3, padding=1), ConvSpec(64, 3, padding=1, pool=2)),
        in_channels=in_channels, input_size=input_size, num_classes=num_classes, arch="four-conv-cnn",
    )


@register("cifar-cnn", "for 32×32 colour images (CIFAR): five 3×3 conv stages (32, 32, 64, 64, 128) with batch norm, "
                       "pooling after the 2nd, 4th and 5th")
def cifar_cnn(*, in_channels: int = 3, input_size: tuple[int, int] = (32, 32),
              num_classes: int = 10) -> CNNConfig:
    return CNNConfig(
        convs=(
            ConvSpec(32, 3, padding=1, batch_norm=True),
            ConvSpec(32, 3, padding=1, pool=2, batch_norm=True),
            ConvSpec(64, 3, padding=1, batch_norm=True),
            ConvSpec(64, 3, padding=1, pool=2, batch_norm=True, dropout=0.1),
            ConvSpec(128, 3, padding=1, pool=2, batch_norm=True, dropout=0.2),
        ),
        in_channels=in_channels, input_size=input_size, num_classes=num_classes,
        classifier_dropout=0.3, arch="cifar-cnn",
    )
