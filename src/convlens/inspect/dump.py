"""Write activations to disk during a pass, and read them back.

Layout of a dump directory (written atomically: a reader never sees a partial dump)::

    <dir>/manifest.json                  written last; layers, shapes, shards
    <dir>/<layer>-00000.safetensors      tensors "activations" (n, C, H, W) and "index" (n,)
    <dir>/<layer>-00001.safetensors      ...

Each shard holds consecutive inputs; ``index`` gives their positions in the data. Memory
is bounded by one shard per layer (``shard_mb``).

>>> import tempfile, torch
>>> from torch import nn
>>> from convlens.inspect.stats import channel_stats
>>> tmp = tempfile.TemporaryDirectory()
>>> d = tmp.name + "/acts"
>>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
>>> _ = channel_stats(model, torch.randn(5, 1, 6, 6), ["0"], dump_to=d, progress=False)
>>> read_activations(d, "0").shape
torch.Size([5, 2, 4, 4])
>>> tmp.cleanup()
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from convlens._atomic import AtomicDir, check_replaceable
from convlens.errors import ConfigError, DataError, LayerError, unknown_name

if TYPE_CHECKING:
    from convlens.inspect.passes import Data

__all__ = ["FORMAT", "ActivationWriter", "dump_activations", "dump_info", "read_activations"]

FORMAT = "convlens-activations"
MANIFEST = "manifest.json"


def _file_stem(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.#-]", "_", key)


class ActivationWriter:
    """A pass reducer that writes every layer output it sees into safetensors shards."""

    def __init__(self, out_dir: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32, shard_mb: float = 32.0,
                 overwrite: bool = False) -> None:
        if not dtype.is_floating_point:
            raise ConfigError(f"dump dtype must be a floating type, got {dtype}")
        if shard_mb <= 0:
            raise ConfigError(f"shard_mb must be positive, got {shard_mb}")
        # before the pass: an earlier dump is replaced only with overwrite, a folder of other files never
        check_replaceable(out_dir, overwrite=overwrite, what="activation dump", fix="choose another --dump")
        self._dir = AtomicDir(out_dir, fix="choose another --dump")
        self.target = self._dir.target
        self.tmp = self._dir.path
        self.dtype = dtype
        self.shard_bytes = int(shard_mb * 2**20)
        self._buffers: dict[str, list[Tensor]] = {}
        self._starts: dict[str, int] = {}
        self._bytes: dict[str, int] = {}
        self._shards: dict[str, list[dict[str, Any]]] = {}

    def update(self, key: str, value: Tensor, offset: int, x: Tensor) -> None:
        buf = self._buffers.setdefault(key, [])
        if not buf:
            self._starts[key] = offset
        copy = value.detach().to(device="cpu", dtype=self.dtype, copy=True)
        buf.append(copy)
        self._bytes[key] = self._bytes.get(key, 0) + copy.numel() * copy.element_size()
        if self._bytes[key] >= self.shard_bytes:
            self._flush(key)

    def _flush(self, key: str) -> None:
        from safetensors.torch import save

        buf = self._buffers.get(key)
        if not buf:
            return
        acts = torch.cat(buf)
        start = self._starts[key]
        shards = self._shards.setdefault(key, [])
        name = f"{_file_stem(key)}-{len(shards):05d}.safetensors"
        index = torch.arange(start, start + acts.shape[0], dtype=torch.int64)
        # bytes through open(): the umask decides the mode (save_file makes shards 0600)
        (self.tmp / name).write_bytes(save({"activations": acts.contiguous(), "index": index}))
        shards.append({"file": name, "start": start, "count": int(acts.shape[0])})
        buf.clear()
        self._bytes[key] = 0

    def close(self, n_inputs: int, shapes: dict[str, tuple[int, ...]]) -> Path:
        """Write the remaining shards and the manifest, then move the dump into place."""
        try:
            for key in list(self._buffers):
                self._flush(key)
            manifest = {
                "format": FORMAT,
                "version": 1,
                "n_inputs": n_inputs,
                "dtype": str(self.dtype).removeprefix("torch."),
                "layers": {k: {"shape": list(shapes[k]), "shards": v} for k, v in self._shards.items()},
            }
            (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        except BaseException:
            self.abort()
            raise
        return self._dir.commit()

    def abort(self) -> None:
        """Remove the partial dump; the target is left as it was."""
        self._dir.abort()


def dump_activations(
    model: torch.nn.Module,
    data: Data,
    layers: str | Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    batch_size: int = 256,
    dtype: torch.dtype = torch.float32,
    shard_mb: float = 32.0,
    progress: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Stream ``data`` through ``model`` and write the outputs of ``layers`` to ``out_dir``.

    One pass in eval mode without gradients; memory stays at one batch plus one shard per
    layer. Returns the dump directory (see :func:`read_activations`). To get statistics in
    the same pass, use ``channel_stats(..., dump_to=out_dir)``. An earlier dump at
    ``out_dir`` is replaced only with ``overwrite``.
    """
    from convlens.inspect.passes import stream

    writer = ActivationWriter(out_dir, dtype=dtype, shard_mb=shard_mb, overwrite=overwrite)
    try:
        n, shapes = stream(model, data, layers, [writer], batch_size=batch_size, progress=progress,
                             description="activations")
    except BaseException:
        writer.abort()
        raise
    return writer.close(n, shapes)


def dump_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a dump directory (layers, shapes, number of inputs, shards)."""
    f = Path(path) / MANIFEST
    try:
        info = json.loads(f.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} is not an activation dump (no {MANIFEST}); write one with channel_stats(..., dump_to=DIR)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{f} is not valid JSON ({exc.msg}); write the dump again") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(f"{f} is not a convlens activation manifest")
    return info


def read_activations(
    path: str | os.PathLike[str], layer: str, start: int = 0, stop: int | None = None
) -> Tensor:
    """Activations of ``layer`` for inputs ``start .. stop - 1`` (all by default), as one tensor.

    Only the shards that overlap the range are read.
    """
    from safetensors.torch import load_file

    info = dump_info(path)
    layers = info["layers"]
    if layer not in layers:
        raise LayerError(unknown_name("layer", layer, layers))
    n = int(info["n_inputs"])
    stop = n if stop is None else min(stop, n)
    if not 0 <= start <= stop:
        raise ConfigError(f"range {start}..{stop} is outside the {n} dumped inputs")
    parts = []
    for shard in layers[layer]["shards"]:
        s0, cnt = int(shard["start"]), int(shard["count"])
        lo, hi = max(start, s0), min(stop, s0 + cnt)
        if lo >= hi:
            continue
        acts = load_file(str(Path(path) / shard["file"]))["activations"]
        parts.append(acts[lo - s0:hi - s0])
    if not parts:
        shape = [0, *layers[layer]["shape"]]
        return torch.zeros(shape, dtype=getattr(torch, info["dtype"]))
    return torch.cat(parts)

