"""Compare two models: what each layer represents, which filters correspond, where they disagree.

* :func:`cka`: centred kernel alignment between every layer of A and every layer of B
  (exact or minibatch, linear or RBF), in one streamed pass over the data;
* :func:`match_filters`: the one-to-one matching of two layers' channels by activation
  correlation (Li et al. 2016), with a null from shuffled images;
* :func:`disagreement`: where the predictions differ, per-class accuracy of each model,
  McNemar's exact test and the agreement matrix;
* :func:`linear_probe`: how well a linear classifier reads the classes from each
  compared layer of each model (functional evidence to show beside CKA).

Names are imported on first use, so ``import convlens.compare`` loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convlens._lazy import lazy

_LAZY = {
    "cka": "convlens.compare.similarity",
    "conv_layers": "convlens.compare.similarity",
    "CKAWarning": "convlens.compare.similarity",
    "Similarity": "convlens.compare.similarity",
    "match_filters": "convlens.compare.matching",
    "FilterMatch": "convlens.compare.matching",
    "disagreement": "convlens.compare.disagree",
    "Disagreement": "convlens.compare.disagree",
    "mcnemar_exact": "convlens.compare.disagree",
    "linear_probe": "convlens.compare.probe",
    "ProbeReport": "convlens.compare.probe",
}

__all__ = [
    "CKAWarning", "Disagreement", "FilterMatch", "ProbeReport", "Similarity", "cka", "conv_layers", "disagreement",
    "linear_probe", "match_filters", "mcnemar_exact",
]


__getattr__, __dir__ = lazy(__name__, _LAZY, __all__, globals())


if TYPE_CHECKING:  # pragma: no cover
    from convlens.compare.disagree import Disagreement, disagreement, mcnemar_exact
    from convlens.compare.matching import FilterMatch, match_filters
    from convlens.compare.probe import ProbeReport, linear_probe
    from convlens.compare.similarity import CKAWarning, Similarity, cka, conv_layers
