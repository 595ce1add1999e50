"""Inside any model: activation capture, layer discovery, channel statistics, top-k examples.

Every view convlens offers reads a model's insides through :func:`capture` (or its
streaming sibling :func:`observe`). Names here are imported on first use, so importing
:mod:`convlens.inspect` for :func:`capture` does not load the dataset passes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convlens._lazy import lazy
from convlens.inspect.capture import (
    Capture,
    CaptureError,
    CaptureResult,
    capture,
    capture_once,
    layer_names,
    observe,
    resolve_layers,
)

_LAZY = {
    "layers": "convlens.inspect.table",
    "LayerRow": "convlens.inspect.table",
    "LayerTable": "convlens.inspect.table",
    "channel_stats": "convlens.inspect.stats",
    "LayerStats": "convlens.inspect.stats",
    "StatsReport": "convlens.inspect.stats",
    "topk_examples": "convlens.inspect.topk",
    "TopK": "convlens.inspect.topk",
    "TopKReport": "convlens.inspect.topk",
    "read_activations": "convlens.inspect.dump",
    "dump_activations": "convlens.inspect.dump",
    "dump_info": "convlens.inspect.dump",
}

__all__ = [
    "Capture",
    "CaptureError",
    "CaptureResult",
    "LayerRow",
    "LayerStats",
    "LayerTable",
    "StatsReport",
    "TopK",
    "TopKReport",
    "capture",
    "capture_once",
    "channel_stats",
    "dump_activations",
    "dump_info",
    "layer_names",
    "layers",
    "observe",
    "read_activations",
    "resolve_layers",
    "topk_examples",
]


__getattr__, __dir__ = lazy(__name__, _LAZY, __all__, globals())


if TYPE_CHECKING:  # pragma: no cover
    from convlens.inspect.dump import dump_activations, dump_info, read_activations
    from convlens.inspect.stats import LayerStats, StatsReport, channel_stats
    from convlens.inspect.table import LayerRow, LayerTable, layers
    from convlens.inspect.topk import TopK, TopKReport, topk_examples
