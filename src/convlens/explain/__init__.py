"""Which image regions drive a prediction: the CAM family, gradient methods, faithfulness.

>>> import convlens
>>> result = convlens.cam(model, x, method="gradcam", layer="conv2")   # doctest: +SKIP
>>> result.maps.shape            # (N, H, W) at input size            # doctest: +SKIP
>>> result.raw.shape             # (N, h, w) at the layer, signed      # doctest: +SKIP

Every method is in :data:`METHODS` (name -> class); all of them read the model through
:func:`convlens.capture` and leave it exactly as it came in.
"""

from __future__ import annotations

from convlens.explain import cams as _cams  # noqa: F401  (registers the methods)
from convlens.explain import gradients as _gradients  # noqa: F401
from convlens.explain.api import cam, explain, make_method, method_options
from convlens.explain.base import (
    Explanation,
    GradientCAM,
    InputMethod,
    LayerMethod,
    Method,
    default_layer,
    normalise,
    upsample,
)
from convlens.explain.faithfulness import (
    FaithfulnessReport,
    MethodScores,
    SanityCheck,
    auc,
    average_drop_increase,
    blur,
    faithfulness,
    perturbation_curves,
    sanity_check,
    spearman,
)
from convlens.explain.registry import METHODS, get_method, list_methods, register_method
from convlens.inspect.targets import Target, parse_target

__all__ = [
    "METHODS",
    "Explanation",
    "FaithfulnessReport",
    "GradientCAM",
    "InputMethod",
    "LayerMethod",
    "Method",
    "MethodScores",
    "SanityCheck",
    "Target",
    "auc",
    "average_drop_increase",
    "blur",
    "cam",
    "default_layer",
    "explain",
    "faithfulness",
    "get_method",
    "list_methods",
    "make_method",
    "method_options",
    "normalise",
    "parse_target",
    "perturbation_curves",
    "register_method",
    "sanity_check",
    "spearman",
    "upsample",
]
