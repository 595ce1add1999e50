"""Diagnose a classifier over a whole dataset: where and why it is wrong.

>>> import convlens
>>> d = convlens.diagnose(model, test, train=train)   # doctest: +SKIP
>>> d.confusion, d.ece, d.errors["confident_wrong"][0].top3, d.suspected_label_errors[:5]  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import types
from typing import Any

from convlens.diagnose.core import (
    BINS,
    KINDS,
    Cell,
    Diagnosis,
    GalleryItem,
    LabelSuspect,
    Neighbour,
    Reliability,
    diagnose,
)

__all__ = ["BINS", "KINDS", "Cell", "Diagnosis", "GalleryItem", "LabelSuspect", "Neighbour", "Reliability",
           "diagnose"]


class _CallableModule(types.ModuleType):
    """``convlens.diagnose`` names both this package and its function: importing the
    package (``from convlens.diagnose import Diagnosis``) makes Python bind the package as
    ``convlens.diagnose``, so the package calls the function, and
    ``convlens.diagnose(model, data)`` works whichever of the two that name holds."""

    def __call__(self, *args: Any, **kwargs: Any) -> Diagnosis:
        return diagnose(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
