"""Diagnose a classifier over a whole dataset: where and why it is wrong (:func:`diagnose`),
and whether it looks at the object or at its surroundings (:func:`audit`).

>>> import convlens
>>> d = convlens.diagnose(model, test, train=train)   # doctest: +SKIP
>>> d.confusion, d.ece, d.errors["confident_wrong"][0].top3, d.suspected_label_errors[:5]  # doctest: +SKIP
>>> convlens.audit(model, test).verdict                # doctest: +SKIP

``convlens.diagnose`` names both this package and its function; calling the package
calls the function (:func:`convlens._lazy.callable_package`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convlens._lazy import callable_package, lazy
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

if TYPE_CHECKING:
    from convlens.diagnose.audit import Audit, audit

__all__ = ["BINS", "KINDS", "Audit", "Cell", "Diagnosis", "GalleryItem", "LabelSuspect", "Neighbour",
           "Reliability", "audit", "diagnose"]

_LAZY = {
    "audit": "convlens.diagnose.audit",
    "Audit": "convlens.diagnose.audit",
}

__getattr__, __dir__ = lazy(__name__, _LAZY, __all__, globals())
callable_package(__name__, diagnose)
