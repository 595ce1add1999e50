"""Training: loop, evaluation, progress, device choice.

``convlens.train`` names both this package and :func:`train`; calling the package calls
the function (:func:`convlens._lazy.callable_package`).
"""

from convlens._lazy import callable_package
from convlens.train.callbacks import Callback, RichProgress
from convlens.train.config import TUTORIAL, TrainConfig
from convlens.train.device import resolve_device
from convlens.train.loop import evaluate, train

__all__ = ["TUTORIAL", "Callback", "RichProgress", "TrainConfig", "evaluate", "resolve_device", "train"]

callable_package(__name__, train)
