"""Training: loop, evaluation, progress, device choice."""

from convlens.train.callbacks import Callback, RichProgress
from convlens.train.config import TUTORIAL, TrainConfig
from convlens.train.device import resolve_device
from convlens.train.loop import evaluate, train

__all__ = ["TUTORIAL", "Callback", "RichProgress", "TrainConfig", "evaluate", "resolve_device", "train"]
