"""Diagnose a model on a whole dataset: errors, confusion, calibration, label suspects, and
the background / spurious-cue audit (:func:`audit`).

>>> from convlens.diagnose import audit                               # doctest: +SKIP
>>> audit(model, test).verdict                                        # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convlens._lazy import lazy

if TYPE_CHECKING:
    from convlens.diagnose.audit import Audit, audit

__all__ = ["Audit", "audit"]

_LAZY = {
    "audit": "convlens.diagnose.audit",
    "Audit": "convlens.diagnose.audit",
}

__getattr__, __dir__ = lazy(__name__, _LAZY, __all__, globals())
