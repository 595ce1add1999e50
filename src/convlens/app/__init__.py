"""The local web app: choose or draw an input, see the prediction, feature maps, filters,
CAMs with their faithfulness, and the model's first convolution worked out.

>>> from convlens.app import AppState, create_app                         # doctest: +SKIP
>>> app = create_app(AppState.from_handle(open_model("convlens-demo/run")))  # doctest: +SKIP

``create_app`` takes its :class:`AppState` explicitly (no module-level state); every page,
script and stylesheet is package data served by the app itself (nothing from a CDN).
The pages call the JSON and image endpoints under ``/api``; those call
:mod:`convlens.views` and the library, and add no computation of their own. Needs the
``app`` extra (``pip install 'convlens[app]'``: FastAPI and uvicorn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convlens.app.state import MAX_UPLOAD_BYTES, AppState

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["MAX_UPLOAD_BYTES", "AppState", "create_app"]


def create_app(state: AppState) -> FastAPI:
    """The FastAPI application serving ``state`` (see :mod:`convlens.app.server`)."""
    from convlens.app.server import build

    return build(state)
