"""Training hyperparameters with good defaults."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from convlens.errors import ConfigError, positive_int

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
        if self.steps is not None:
            positive_int("steps", self.steps)
        else:
            positive_int("epochs", self.epochs)
        positive_int("batch_size", self.batch_size)
        positive_int("eval_batch_size", self.eval_batch_size)
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

    def updated(self, **changes: object) -> TrainConfig:
        """A checked copy with the given fields changed; ``None`` leaves a field as it is
        (so unset command-line options keep the defaults).

        >>> TrainConfig().updated(epochs=2, lr=None).epochs
        2
        """
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"unknown training settings {unknown}; valid are {sorted(names)}")
        out = copy.copy(self)
        for name, value in changes.items():
            if value is not None:
                setattr(out, name, value)
        out.validate()
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TUTORIAL = TrainConfig(
    epochs=3, batch_size=64, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant",
    augment_shift=0,
)
"""The tutorial's own recipe (Adam 1e-3, batch 64, 3 epochs), for comparison."""
