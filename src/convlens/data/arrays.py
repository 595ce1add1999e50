"""Images and labels the user already has as NumPy arrays (``.npz`` or ``.npy``).

An ``.npz`` file holds either both splits, ``x_train``, ``y_train``, ``x_test``,
``y_test`` (the Keras names), or one set, ``images`` (or ``x``) and ``labels`` (or
``y``), that is split by a seeded per-class fraction ``test`` (as image folders are).
An optional ``classes`` array names the labels (default ``"0"``, ``"1"``, ...).
An ``.npy`` file holds the images; its labels are the ``labels=`` file, or
``labels.npy`` beside it.

Images are ``N×H×W`` (gray), ``N×H×W×C`` (channels last, C 1 or 3) or ``N×C×H×W``
(C 1 or 3): uint8 0..255, or floats in [0, 1] (scaled to 0..255 and rounded). Labels
are integers ``0..K-1``. Files are read with ``allow_pickle=False``: an array of
Python objects is refused, never unpickled.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convlens.errors import ConfigError, DataError

__all__ = ["load_arrays", "to_nchw"]


def _read(path: Path) -> Any:
    if not path.exists():
        raise DataError(f"array file {path} does not exist; check the path")
    with open(path, "rb") as f:
        magic = f.read(6)
    if not (magic.startswith(b"\x93NUMPY") or magic.startswith(b"PK")):
        raise DataError(f"{path} is not a NumPy .npy/.npz file (save arrays with np.save or np.savez)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:  # "Object arrays cannot be loaded when allow_pickle=False"
        if "allow_pickle" in str(exc):
            raise DataError(f"{path} holds Python objects (a pickle); convlens reads only plain numeric arrays "
                            "(save them with np.savez(images=uint8_array, labels=int_array))") from None
        raise DataError(f"{path} is not a NumPy .npy/.npz file convlens can read: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a NumPy .npy/.npz file convlens can read: {exc}") from None


def to_nchw(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 ``N×C×H×W`` from the layouts in the module docstring."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[1] not in (1, 3) and a.shape[3] in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise DataError(f"{where} has shape {images.shape}; images must be N×H×W, N×H×W×C or N×C×H×W with 1 or 3 "
                        "channels")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
            raise DataError(f"{where} holds floats outside [0, 1] ({a.min():g} to {a.max():g}); give uint8 pixels "
                            "0..255 or floats scaled to [0, 1]")
        return np.ascontiguousarray(np.rint(a * 255.0).astype(np.uint8))
    if np.issubdtype(a.dtype, np.integer) and (not a.size or (a.min() >= 0 and a.max() <= 255)):
        return np.ascontiguousarray(a.astype(np.uint8))
    raise DataError(f"{where} holds {a.dtype}; give uint8 pixels 0..255 or floats in [0, 1]")


def _labels(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where} has {y.dtype} of shape {y.shape}; labels must be N integers")
    if len(y) != n:
        raise DataError(f"{where} has {len(y)} labels for {n} images; give one label per image")
    if y.size and y.min() < 0:
        raise DataError(f"{where} has a negative label ({int(y.min())}); labels must be 0..K-1")
    return y.astype(np.int64)


def _pick(z: Any, names: Sequence[str]) -> str | None:
    return next((k for k in names if k in z), None)


def load_arrays(
    path: str | os.PathLike[str],
    split: str = "train",
    *,
    name: str | None = None,
    labels: str | os.PathLike[str] | None = None,
    test: float = 0.2,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Any:
    """Split ``split`` of the arrays in ``path`` (the parts of an :class:`~convlens.data.ImageDataset`)
    (``mean``/``std`` default to the training split's, computed exactly)."""
    import torch

    from convlens.data.folder import _per_channel
    from convlens.data.loaded import Loaded

    p = Path(path).expanduser().resolve()
    if split not in ("train", "test"):
        from convlens.errors import unknown_name

        raise DataError(unknown_name("split", split, ("train", "test")))
    classes: tuple[str, ...] | None = None
    if p.suffix == ".npy":
        lab_path = Path(labels).expanduser().resolve() if labels is not None else p.with_name("labels.npy")
        if lab_path == p:
            raise DataError(f"{p} is the images file; give its labels with labels=FILE.npy (or ?labels=FILE.npy)")
        x = to_nchw(_read(p), str(p))
        sets = {"all": (x, _labels(_read(lab_path), len(x), str(lab_path)))}
    else:
        if labels is not None:
            raise ConfigError("labels=FILE goes with an .npy images file; an .npz holds its labels")
        z = _read(p)
        if not hasattr(z, "files"):
            raise DataError(f"{p} is a single array; name the file .npy or save images and labels with np.savez")
        with z:
            if "classes" in z:
                classes = tuple(str(c) for c in z["classes"].tolist())
            if "x_train" in z and "x_test" in z:
                sets = {}
                for part in ("train", "test"):
                    y_key = f"y_{part}"
                    if y_key not in z:
                        raise DataError(f"{p} has x_{part} but no {y_key}; save the labels as {y_key}")
                    xs = to_nchw(z[f"x_{part}"], f"{p}[x_{part}]")
                    sets[part] = (xs, _labels(z[y_key], len(xs), f"{p}[{y_key}]"))
            else:
                xk, yk = _pick(z, ("images", "x")), _pick(z, ("labels", "y"))
                if xk is None or yk is None:
                    raise DataError(f"{p} holds {sorted(z.files)}; convlens reads images and labels (or x_train, "
                                    "y_train, x_test, y_test)")
                x = to_nchw(z[xk], f"{p}[{xk}]")
                sets = {"all": (x, _labels(z[yk], len(x), f"{p}[{yk}]"))}
    n_classes = max(int(y.max()) + 1 if y.size else 0 for _, y in sets.values())
    if classes is None:
        classes = tuple(str(i) for i in range(n_classes))
    elif len(classes) < n_classes:
        raise DataError(f"{p} names {len(classes)} classes but has label {n_classes - 1}; give one name per label")
    if "all" in sets:
        x, y = sets["all"]
        if not 0.0 < test < 1.0:
            raise ConfigError(f"the test fraction must be between 0 and 1 (exclusive), got {test}")
        rng = np.random.default_rng(seed)
        is_test = np.zeros(len(y), dtype=bool)
        for label in range(n_classes):
            members = np.flatnonzero(y == label)
            k = min(len(members) - 1, round(len(members) * test)) if len(members) > 1 else 0
            is_test[rng.permutation(members)[:k]] = True
        sets = {"train": (x[~is_test], y[~is_test]), "test": (x[is_test], y[is_test])}
    if sets["train"][0].shape[1:] != sets["test"][0].shape[1:]:
        raise DataError(f"{p}: the train images are {sets['train'][0].shape[1:]} but the test images "
                        f"{sets['test'][0].shape[1:]}; both splits need one image shape")
    images, ys = sets[split]
    c = images.shape[1]
    if mean is None or std is None:
        if mean is not None or std is not None:
            raise ConfigError("give mean and std together, or neither (they are then computed)")
        m, s = _channel_stats(sets["train"][0])
    else:
        m, s = _per_channel("mean", mean, c), _per_channel("std", std, c)
    return Loaded(images=torch.from_numpy(images), labels=torch.from_numpy(ys), classes=classes,
                        name=name or f"npz:{p}", split=split, source=str(p), mean=m, std=s)


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and population std of uint8 ``images`` (N, C, H, W), pixels
    scaled to [0, 1], from 256-bin histograms."""
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for ch in range(images.shape[1]):
        counts = np.bincount(images[:, ch].reshape(-1), minlength=256).astype(np.float64)
        total = counts.sum()
        if total == 0:
            means.append(0.0)
            stds.append(1.0)
            continue
        mu = float((counts * values).sum() / total)
        var = float((counts * (values - mu) ** 2).sum() / total)
        means.append(mu)
        stds.append(max(var, 0.0) ** 0.5 or 1.0)
    return tuple(means), tuple(stds)
