"""Inside any model: activation capture, layer discovery, channel statistics, top-k examples.

Every view convlens offers reads a model's insides through :func:`capture`.
"""

from __future__ import annotations

from convlens.inspect.capture import (
    Capture,
    CaptureError,
    CaptureResult,
    capture,
    capture_once,
    layer_names,
    resolve_layers,
)

__all__ = [
    "Capture",
    "CaptureError",
    "CaptureResult",
    "capture",
    "capture_once",
    "layer_names",
    "resolve_layers",
]
