"""convlens: see what a convolutional neural network learned.

``import convlens`` is light: the public names below are imported on first use
(PEP 562), so torch and matplotlib load only when something needs them.
``convlens.__version__`` is read from the installed package's metadata (see
:mod:`convlens._version`), also on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convlens._lazy import lazy

# public name -> module that defines it
_LAZY = {
    "load_run": "convlens.models.run",
    "Run": "convlens.models.run",
    "train": "convlens.train",
    "TrainConfig": "convlens.train",
    "build_model": "convlens.models",
    "capture": "convlens.inspect",
    "cka": "convlens.compare",
    "layers": "convlens.inspect",
    "channel_stats": "convlens.inspect",
    "topk_examples": "convlens.inspect",
    "cam": "convlens.explain",
    "faithfulness": "convlens.explain",
    "load_model": "convlens.models.external",
    "receptive_field": "convlens.inspect.receptive",
    "load_dataset": "convlens.data",
    "ConvlensError": "convlens.errors",
    "audit": "convlens.diagnose.audit",
    "Audit": "convlens.diagnose.audit",
    "diagnose": "convlens.diagnose",
    "Diagnosis": "convlens.diagnose",
    "featvis": "convlens.inspect.featvis",
    "classify_filters": "convlens.inspect.kinds",
    "Tracker": "convlens.train.tracking",
}

__all__ = [
    "Audit", "ConvlensError", "Diagnosis", "Run", "Tracker", "TrainConfig", "__version__", "audit",
    "build_model", "cam", "capture", "channel_stats", "cka", "classify_filters", "diagnose",
    "faithfulness", "featvis", "layers", "load_dataset", "load_model", "load_run", "receptive_field",
    "topk_examples", "train",
]


_lazy_getattr, __dir__ = lazy(__name__, _LAZY, __all__, globals())


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read from the package's metadata, once
        from convlens._version import version

        globals()[name] = value = version()
        return value
    return _lazy_getattr(name)


if TYPE_CHECKING:  # pragma: no cover
    __version__: str
    from convlens.compare import cka
    from convlens.data import load_dataset
    from convlens.diagnose import Diagnosis, diagnose
    from convlens.diagnose.audit import Audit, audit
    from convlens.errors import ConvlensError
    from convlens.explain import cam, faithfulness
    from convlens.inspect import capture, channel_stats, layers, topk_examples
    from convlens.inspect.featvis import featvis
    from convlens.inspect.kinds import classify_filters
    from convlens.inspect.receptive import receptive_field
    from convlens.models import build_model
    from convlens.models.external import load_model
    from convlens.models.run import Run, load_run
    from convlens.train import TrainConfig, train
    from convlens.train.tracking import Tracker
