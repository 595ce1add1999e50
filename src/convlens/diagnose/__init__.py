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

from convlens._lazy import callable_package

# imported here, not lazily: importing the sub-module convlens.diagnose.audit would otherwise
# bind the name ``audit`` of this package to that module instead of the function
from convlens.diagnose.audit import Audit, audit
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

__all__ = ["BINS", "KINDS", "Audit", "Cell", "Diagnosis", "GalleryItem", "LabelSuspect", "Neighbour",
           "Reliability", "audit", "diagnose"]

callable_package(__name__, diagnose)
