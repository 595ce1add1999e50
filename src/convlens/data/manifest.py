"""The manifest of a dataset directory written by ``convlens make-dataset``.

A directory of IDX files is normally one of the registered datasets (MNIST and its
siblings, :mod:`convlens.data.sources`). A directory that ``convlens make-dataset``
wrote (Patch-MNIST, Colored-MNIST, Label-flip: :mod:`convlens.data.synthetic`) also
holds ``dataset.json``, which names what is in it::

    {"convlens_dataset": 1, "name": "patch-mnist", "title": "Patch-MNIST (rho=0.95)",
     "based_on": "mnist", "classes": ["0", ..., "9"], "label_kind": "digit",
     "mean": [0.14], "std": [0.32], "files": {"train_images": "train-images-idx3-ubyte.gz", ...},
     "masks": {"test": "test-foreground.npy"}, "details": {...}}

:func:`convlens.data.load_dataset` reads such a directory as the dataset the manifest
names: asking it for that name, or for the dataset it was made from (``based_on``, the
``mnist`` every command defaults to), gives the made dataset with the manifest's classes
and normalisation; asking it for another registered dataset is an error that says what
the directory holds. So ``convlens train --data-dir DIR`` trains on it, and the run
records its name, which later commands find again through ``--data-dir DIR``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from convlens.data.sources import ENV_DATA_DIR, FILE_KEYS, SOURCES, Source
from convlens.errors import DataError, unknown_name

__all__ = ["MANIFEST", "data_folder", "manifest_source", "read_manifest"]

MANIFEST = "dataset.json"
FORMAT = 1


def data_folder(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """The data directory a load reads: ``data_dir``, else ``CONVLENS_DATA_DIR``, else None."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env).expanduser() if env else None


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of ``folder`` as a dict, or None if it has none.

    Raises:
        DataError: the manifest exists but is not valid JSON or lacks a field.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"dataset manifest {path} cannot be read ({exc}); write the directory again with "
                        "`convlens make-dataset ... --force`") from None
    missing = [k for k in ("convlens_dataset", "name", "classes", "mean", "std", "files") if k not in d]
    if not isinstance(d, dict) or missing:
        raise DataError(f"dataset manifest {path} lacks {', '.join(missing) or 'its fields'}; write the directory "
                        "again with `convlens make-dataset ... --force`")
    if int(d["convlens_dataset"]) > FORMAT:
        raise DataError(f"dataset manifest {path} has format {d['convlens_dataset']}, newer than this convlens "
                        f"reads ({FORMAT}); upgrade convlens")
    return d


def _source(d: dict[str, Any]) -> Source:
    files = {k: str(d["files"][k]) for k in FILE_KEYS}
    return Source(name=str(d["name"]), title=str(d.get("title", d["name"])), classes=tuple(str(c) for c in d["classes"]),
                  urls=(), checksums={}, mean=tuple(float(m) for m in d["mean"]),
                  std=tuple(float(s) for s in d["std"]), files=files, label_kind=str(d.get("label_kind", "class")))


def manifest_source(name: str | Source, data_dir: str | os.PathLike[str] | None) -> Source | None:
    """The dataset a manifest in the data directory describes, when a load of ``name`` should
    read it (see the module docstring); None when the directory has no manifest (the
    registered source applies).

    Raises:
        DataError: the directory holds a made dataset other than ``name``, or ``name`` is
            no registered dataset and the directory has no manifest naming it.
    """
    if isinstance(name, Source):
        return None
    folder = data_folder(data_dir)
    d = read_manifest(folder) if folder is not None and folder.is_dir() else None
    if d is None:
        if name not in SOURCES and folder is not None:
            from convlens.data.spec import NAMES  # every registered name and spec form

            raise DataError(f"{unknown_name('dataset', name, NAMES)}; {folder} holds no {MANIFEST}: for a dataset "
                            "made by `convlens make-dataset`, pass --data-dir DIR, the directory it wrote")
        return None
    if name in (d["name"], d.get("based_on")):
        return _source(d)
    raise DataError(f"{folder} holds {d.get('title', d['name'])} (made by `convlens make-dataset`, see its {MANIFEST}), "
                    f"not {name}; pass --dataset {d['name']}, or point --data-dir at the {name} files")
