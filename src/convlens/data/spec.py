"""Dataset specs: one string names any data convlens reads, in Python and on the command line.

``mnist``, ``fashion-mnist``, ``kmnist``
    the IDX datasets (:mod:`convlens.data.sources`);
``cifar10``, ``cifar100``
    the CIFAR binary versions (:mod:`convlens.data.cifar`);
``folder:PATH``
    an image folder, one sub-folder per class (:mod:`convlens.data.folder`);
``npz:PATH``
    NumPy arrays, ``.npz`` or ``.npy`` (:mod:`convlens.data.arrays`).

Options follow a ``?``, joined by ``&``, or come as keyword arguments of
:func:`convlens.load_dataset` (which win):

======== ============================================ =====================
size     resize and centre-crop to H×W: ``32``, ``64x48`` folder
channels 1 (gray) or 3 (RGB)                          folder
test     fraction of each class held out for testing  folder, npz
seed     seed of that split                           folder, npz
mean/std normalisation, one value or one per channel  folder, npz, cifar
labels   the labels file of an ``.npy`` images file    npz
stream   ``yes``/``no``/``auto``: stream from disk     folder
budget   memory budget before streaming, e.g. ``2GB``  folder
======== ============================================ =====================

A dataset loaded from a spec is named by its canonical form (absolute path, the
options that change the data), which a run directory records, so later commands read
the same data again:

>>> canonical("folder:/data/photos?size=32&stream=yes")
'folder:/data/photos?size=32x32'
>>> parse("npz:/data/x.npz?test=0.1&seed=3").options
{'test': 0.1, 'seed': 3}
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convlens.errors import ConfigError, DataError, unknown_name

__all__ = ["KINDS", "DatasetSpec", "canonical", "dataset_source", "is_spec", "load_spec", "parse", "slug"]

#: Spec kinds besides the IDX names, and the options each takes.
KINDS: dict[str, tuple[str, ...]] = {
    "folder": ("size", "channels", "test", "seed", "mean", "std", "stream", "budget"),
    "npz": ("labels", "test", "seed", "mean", "std"),
    "cifar10": ("mean", "std"),
    "cifar100": ("mean", "std"),
}
#: Options that only change how data is read, not which data: not part of a dataset's name.
_RUNTIME = ("stream", "budget", "checksums")
_DEFAULTS: dict[str, Any] = {"test": 0.2, "seed": 0}


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: ``kind`` (``folder``, ``npz``, ``cifar10``, ``cifar100``), ``path``
    (absolute, for folder and npz) and ``options`` (typed)."""

    kind: str
    path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def name(self) -> str:
        """The canonical string (see :func:`canonical`)."""
        head = f"{self.kind}:{self.path}" if self.path is not None else self.kind
        opts = [(k, v) for k, v in sorted(self.options.items())
                if k not in _RUNTIME and _DEFAULTS.get(k, object()) != v]
        return head + ("?" + "&".join(f"{k}={_format(k, v)}" for k, v in opts) if opts else "")


def is_spec(name: object) -> bool:
    """Whether ``name`` is a spec handled here (not an IDX dataset name)."""
    if not isinstance(name, str):
        return False
    head = name.split("?", 1)[0]
    return head in ("cifar10", "cifar100") or (head.split(":", 1)[0] in ("folder", "npz") and ":" in head)


def _format(key: str, value: Any) -> str:
    if key == "size":
        return f"{value[0]}x{value[1]}"
    if key in ("mean", "std"):
        return ",".join(f"{v:g}" for v in value)
    if key == "stream":
        return {True: "yes", False: "no", None: "auto"}[value]
    return str(value)


def _value(kind: str, key: str, raw: Any) -> Any:
    if key not in KINDS[kind]:
        raise ConfigError(unknown_name(f"option of {kind} datasets", key, KINDS[kind]))
    try:
        if key == "size":
            if isinstance(raw, int) and not isinstance(raw, bool):
                h = w = raw
            elif isinstance(raw, (tuple, list)):
                h, w = (int(v) for v in raw)
            else:
                parts = re.split(r"[x×,]", str(raw).strip())
                h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
            if h < 1 or w < 1 or h * w > 4096 * 4096:
                raise ValueError
            return (h, w)
        if key == "channels":
            c = int(raw)
            if c not in (1, 3):
                raise ValueError
            return c
        if key == "test":
            t = float(raw)
            if not 0.0 < t < 1.0:
                raise ValueError
            return t
        if key == "seed":
            return int(raw)
        if key in ("mean", "std"):
            vals = tuple(float(v) for v in (raw.split(",") if isinstance(raw, str) else
                                            (raw if isinstance(raw, (tuple, list)) else [raw])))
            if not vals:
                raise ValueError
            return vals
        if key == "stream":
            if raw is None or isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            table = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False, "auto": None}
            if text not in table:
                raise ValueError
            return table[text]
        if key == "labels":
            return str(Path(str(raw)).expanduser().resolve())
        if key == "budget":
            from convlens.data.folder import budget_bytes

            return budget_bytes(raw if isinstance(raw, int) else str(raw))
    except (TypeError, ValueError):
        hints = {"size": "a size like 32 or 64x48", "channels": "1 or 3", "test": "a fraction between 0 and 1",
                 "seed": "an integer", "mean": "numbers separated by commas", "std": "numbers separated by commas",
                 "stream": "yes, no or auto", "labels": "a file", "budget": "bytes, e.g. 2GB"}
        raise ConfigError(f"{kind} option {key}={raw} is not valid: give {hints.get(key, 'a value')}") from None
    return raw


def parse(text: str, **options: Any) -> DatasetSpec:
    """Parse ``text`` (see the module docstring); ``options`` override those in the text.

    Raises:
        ConfigError: an unknown kind or option, or an option's value is not valid.
    """
    head, _, query = text.partition("?")
    kind, colon, rest = head.partition(":")
    if head in ("cifar10", "cifar100"):
        kind, path = head, None
    elif kind in ("folder", "npz") and colon:
        if not rest:
            raise ConfigError(f"dataset {text!r} names no path: give {kind}:PATH")
        path = Path(rest).expanduser().resolve()
    else:
        raise ConfigError(unknown_name("dataset", text, NAMES))
    opts: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, eq, raw = part.partition("=")
        if not eq:
            raise ConfigError(f"dataset option {part!r} in {text!r} must be KEY=VALUE (e.g. size=32)")
        opts[key.strip()] = _value(kind, key.strip(), raw.strip())
    for key, raw in options.items():
        if raw is None and key != "stream":
            continue
        if key == "checksums":
            if kind not in ("cifar10", "cifar100"):
                raise ConfigError(f"checksums= goes with cifar10 and cifar100, not {kind} datasets")
            opts[key] = dict(raw)
            continue
        opts[key] = _value(kind, key, raw)
    return DatasetSpec(kind, path, opts)


def canonical(text: str, **options: Any) -> str:
    """The canonical name of a spec: absolute path, sorted options that change the data."""
    return parse(text, **options).name()


def load_spec(text: str, split: str = "train", *, data_dir: str | os.PathLike[str] | None = None,
              base_url: str | None = None, progress: bool | None = None, **options: Any) -> Any:
    """Load split ``split`` of the dataset ``text`` names (the parts of an ImageDataset,
    :class:`~convlens.data.loaded.Loaded`, or a
    StreamingDataset for a folder larger than the memory budget)."""
    spec = parse(text, **options)
    o = dict(spec.options)
    name = spec.name()
    if spec.kind == "folder":
        from convlens.data.stream import load_folder

        assert spec.path is not None  # for mypy: parse gives folder specs a path
        return load_folder(spec.path, split, name=name, size=o.get("size"), channels=o.get("channels"),
                           test=o.get("test", 0.2), seed=o.get("seed", 0), mean=o.get("mean"), std=o.get("std"),
                           stream=o.get("stream"), memory_budget=o.get("budget"), progress=progress)
    if spec.kind == "npz":
        from convlens.data.arrays import load_arrays

        assert spec.path is not None  # for mypy: parse gives npz specs a path
        return load_arrays(spec.path, split, name=name, labels=o.get("labels"), test=o.get("test", 0.2),
                           seed=o.get("seed", 0), mean=o.get("mean"), std=o.get("std"))
    from convlens.data.cifar import load_cifar

    ds = load_cifar(spec.kind, split, data_dir=data_dir, base_url=base_url, checksums=o.get("checksums"),
                    mean=o.get("mean"), std=o.get("std"))
    ds.name = name
    return ds


def dataset_source(name: str, **options: Any) -> tuple[Any, tuple[int, int, int] | None]:
    """``(source, shape)`` for a model that reads dataset ``name``: a
    :class:`~convlens.data.sources.Source` (its name, classes and normalisation) and the
    shape (C, H, W) of one image (None for the IDX datasets: 1×28×28 unless told)."""
    from convlens.data.sources import Source, get_source

    if not is_spec(name):
        return get_source(name), None
    extra = {"stream": True} if parse(name).kind == "folder" else {}  # a streamed split decodes no image
    ds = load_spec(name, "train", **{**extra, **options})
    src = Source(name=ds.name, title=ds.name, classes=tuple(ds.classes), urls=(), checksums={},
                 mean=tuple(ds.mean), std=tuple(ds.std), files={})
    return src, tuple(ds.shape)


def slug(name: str) -> str:
    """A file-name-safe short name for dataset ``name`` (for default run directories):
    ``folder:/data/photos?size=32`` → ``folder-photos-size32x32``."""
    if not is_spec(name):
        return name
    spec = parse(name)
    parts = [spec.kind] + ([spec.path.stem] if spec.path is not None else [])
    parts += [f"{k}{_format(k, v)}" for k, v in sorted(spec.options.items()) if k in ("size", "channels")]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-") or "data"


#: Every dataset name and spec form, for messages.
NAMES = ("mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "folder:PATH", "npz:PATH")


def check_options(name: object, options: Mapping[str, Any]) -> None:
    """Refuse an unknown dataset name (naming every form), and spec options for an IDX
    dataset (they would be ignored)."""
    from convlens.data.sources import SOURCES, Source

    if not isinstance(name, Source) and name not in SOURCES:
        raise DataError(unknown_name("dataset", str(name), NAMES))
    name = getattr(name, "name", name)
    given = [k for k, v in options.items() if v is not None]
    if given:
        raise DataError(f"{', '.join(sorted(given))}: options of folder:, npz: and CIFAR datasets, not of {name}")
