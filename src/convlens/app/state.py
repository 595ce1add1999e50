"""What the web app serves, passed to :func:`convlens.app.create_app` explicitly (no globals)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from convlens.errors import ConfigError, unknown_name

if TYPE_CHECKING:
    from convlens.data.dataset import ImageDataset
    from convlens.models.handle import ModelHandle
    from convlens.views import ChosenInput

#: The largest upload the app reads, in bytes (a drawing is a few kB; a photo of a digit well under this).
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
#: Uploaded images kept in memory (the oldest is forgotten first).
MAX_UPLOADS = 64


@dataclass
class AppState:
    """The model, its test split in memory, and the names a request may use.

    ``results_dir`` is where computed results (``compare.json``, ``diagnosis.json``, ...)
    are looked for (the run directory). Uploaded images live in memory only, under the
    hash of their bytes; nothing a request says becomes a file path.
    """

    handle: ModelHandle
    data: ImageDataset
    layers: list[str]  # layers with spatial maps (feature maps, CAMs)
    convs: list[str]  # conv layers (filters)
    methods: list[str]  # registered explanation methods
    results_dir: Path | None = None
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_uploads: int = MAX_UPLOADS
    uploads: OrderedDict[str, ChosenInput] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    picked: dict[int, ChosenInput] = field(default_factory=dict)  # test examples already prepared

    @classmethod
    def from_handle(cls, handle: ModelHandle, *, data_dir: str | os.PathLike[str] | None = None,
                    data: ImageDataset | None = None) -> AppState:
        """State for ``handle``: its test split (``data``, else read from ``data_dir``)."""
        from torch import nn

        from convlens import views
        from convlens.explain import METHODS

        ds = views.dataset_for(handle, "test", data=data, data_dir=data_dir)
        convs = [n for n, m in handle.model.named_modules() if isinstance(m, nn.Conv2d)]
        return cls(handle, ds, views.spatial_layers(handle), convs, list(METHODS), handle.path)

    # --- names a request may use: checked, or a one-line ConfigError (HTTP 400) ---------------

    def layer(self, name: str | None, *, convs: bool = False) -> str:
        known = self.convs if convs else self.layers
        if name is None:
            return known[0]
        if name not in known:
            raise ConfigError(unknown_name("conv layer" if convs else "layer", name, known))
        return name

    def method(self, name: str) -> str:
        if name not in self.methods:
            raise ConfigError(unknown_name("explanation method", name, self.methods))
        return name

    def chosen(self, spec: str) -> ChosenInput:
        """The input ``spec`` names: ``index:N`` or ``digit:CLASS[:NTH]`` of the test split,
        or ``upload:ID`` (an image uploaded earlier)."""

        kind, _, rest = spec.partition(":")
        if kind == "upload":
            with self.lock:
                found = self.uploads.get(rest)
            if found is None:
                raise ConfigError(f"no uploaded image {rest!r} (the app keeps the last {self.max_uploads}); "
                                  "upload it again")
            return found
        if kind == "index":
            if not rest.isdigit():
                raise ConfigError(f"input {spec!r}: write index:N with N in 0..{len(self.data) - 1}")
            i = int(rest)
            if i >= len(self.data):
                raise ConfigError(f"input {spec!r}: the test split has examples 0..{len(self.data) - 1}")
            return self._example(i)
        if kind == "digit":
            cls, _, nth = rest.partition(":")
            if cls not in self.data.classes and not (cls.isdigit() and int(cls) < len(self.data.classes)):
                raise ConfigError(unknown_name("class", cls, list(self.data.classes)))
            if nth and not nth.isdigit():
                raise ConfigError(f"input {spec!r}: write digit:CLASS:NTH with NTH a whole number")
            label: int | str = int(cls) if cls.isdigit() else cls
            return self._example(self.data.index_of(label, int(nth or 0)))
        raise ConfigError(f"input {spec!r}: use index:N, digit:CLASS[:NTH] or upload:ID")

    def _example(self, i: int) -> ChosenInput:
        """Test example ``i`` prepared for the model (:func:`convlens.views.choose_input`), once:
        the data and the model do not change while the app runs (at most the split's size are kept)."""
        from convlens import views

        with self.lock:
            found = self.picked.get(i)
        if found is None:
            found = views.choose_input(self.handle, index=i, data=self.data)
            with self.lock:
                self.picked[i] = found
        return found

    def add_upload(self, data: bytes, name: str) -> tuple[str, ChosenInput]:
        """Read an uploaded image (:func:`convlens.views.image_input`) and keep it under its hash."""
        from convlens import views

        if len(data) > self.max_upload_bytes:
            raise ConfigError(f"the upload is larger than {self.max_upload_bytes:,} bytes; send a smaller image")
        key = hashlib.sha256(data).hexdigest()[:16]
        chosen = views.image_input(self.handle, data, name=name)
        with self.lock:
            self.uploads[key] = chosen
            self.uploads.move_to_end(key)
            while len(self.uploads) > self.max_uploads:
                self.uploads.popitem(last=False)
        return key, chosen
