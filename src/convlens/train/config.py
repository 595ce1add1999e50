"""Training hyperparameters with good defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from convlens.errors import ConfigError

Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["onecycle", "cosine", "constant"]


@dataclass
class TrainConfig:
    """How to train. The defaults are the demo's recipe.

    ``steps`` (if given) overrides ``epochs``. ``augment_shift`` randomly translates
    each training image by up to that many pixels (0 turns augmentation off).
    ``snapshot_every`` records the first conv layer's filters every that many steps
    (and at step 0 and the end of every epoch); 0 records none.
    """

    epochs: int = 8
    steps: int | None = None
    batch_size: int = 64
    optimizer: Optimizer = "adamw"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: Schedule = "onecycle"
    augment_shift: int = 2
    label_smoothing: float = 0.0
    seed: int = 0
    snapshot_every: int = 50
    eval_batch_size: int = 1000

    def validate(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.steps is None and self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.optimizer not in ("adamw", "adam", "sgd"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}: use adamw, adam or sgd")
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise ConfigError(f"unknown schedule {self.schedule!r}: use onecycle, cosine or constant")
        if self.augment_shift < 0 or self.snapshot_every < 0:
            raise ConfigError("augment_shift and snapshot_every must be zero or positive")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TUTORIAL = TrainConfig(
    epochs=3, batch_size=64, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant",
    augment_shift=0,
)
"""The tutorial's own recipe (Adam 1e-3, batch 64, 3 epochs), for comparison."""
