"""Commands of the main job: train, layers, filters, maps, demo."""

from __future__ import annotations

from convlens.cli._app import app  # noqa: F401
