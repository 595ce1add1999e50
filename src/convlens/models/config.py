"""Model configurations as dataclasses, saved with the weights (cf. nanoGPT's GPTConfig)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ConvSpec:
    """One convolutional stage: conv → [batch norm] → ReLU → [pool] → [dropout]."""

    out_channels: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    dilation: int = 1
    pool: int = 0  # max-pool window (and stride); 0 means no pooling
    batch_norm: bool = False
    dropout: float = 0.0


@dataclass(frozen=True)
class CNNConfig:
    """A small CNN: a stack of :class:`ConvSpec` stages, then one linear classifier.

    ``arch`` names the registered architecture this config came from (for display);
    the model is rebuilt from the fields alone.
    """

    convs: tuple[ConvSpec, ...]
    in_channels: int = 1
    input_size: tuple[int, int] = (28, 28)
    num_classes: int = 10
    classifier_dropout: float = 0.0
    arch: str = "custom"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["convs"] = [asdict(c) for c in self.convs]
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CNNConfig:
        d = dict(d)
        d["convs"] = tuple(ConvSpec(**c) for c in d["convs"])
        d["input_size"] = tuple(d["input_size"])
        return cls(**d)
