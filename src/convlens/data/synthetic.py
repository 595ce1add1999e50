"""Test beds with known ground truth, made from real MNIST: what a shortcut looks like.

* **Patch-MNIST** (:func:`patch_mnist`): every image carries a small bright square
  (``patch`` × ``patch`` pixels of value 255, 6×6 by default: 4.6% of a 28×28 image) at one of ten positions along the border,
  one position per class (:func:`patch_positions`). In a fraction ``rho`` of the
  training images the square sits at the position of the image's own class; in the rest
  at the position of another class, drawn uniformly. With ten classes ``rho = 0.1`` makes
  the position independent of the label (the *control*: the patch carries no information),
  and ``rho = 0.95`` makes it a shortcut that predicts the label 95% of the time (the
  *biased* set). Three test splits: ``aligned`` (every patch at its class's position, as in
  biased training), ``conflicting`` (every patch at another class's position) and ``none``
  (no patch). The directory's ``test`` split is the one named by ``test=`` (``aligned``
  by default: the split on which an audit can see the patch being used); the others are
  written beside it (:func:`load_split`).

  *What is background here.* The audit asks whether a model looks at the object or at its
  surroundings. The object is the digit; the patch is surroundings by construction. The
  foreground masks written with the data are therefore those of the *clean* digit
  (:func:`convlens.data.masks.foreground_masks`, threshold 32, dilated by 2 pixels) with
  the patch's pixels taken out, so the patch always lies on the background even where it
  touches a stroke. Deriving masks from the patched images would call the bright patch
  foreground, and the audit could not see the shortcut.

* **Colored-MNIST** (:func:`colored_mnist`), after Arjovsky et al. (2019, *Invariant Risk
  Minimization*), with their binary task: the label is 0 for digits 0–4 and 1 for 5–9
  (classes ``"0-4"`` and ``"5-9"``), flipped with probability ``label_noise`` (0.25), so the
  shape predicts the label 75% of the time. The colour is the label flipped with
  probability ``e`` of the environment: red (channel 0) for colour 0, green (channel 1)
  for colour 1, blue (channel 2) always black. Two training environments, ``e = 0.1`` and
  ``e = 0.2`` (the first and second half of the training images; ``train-env.npy`` says
  which is which), so colour predicts the label 85% of the time in training, better than
  shape; the test split is the reversed environment ``e = 0.9``. Images are 3×28×28 (no
  down-sampling to 14×14 as in the paper). A model that learned colour scores far below
  chance (50%) on the test split.

* **Label-flip** (:func:`label_flip`): MNIST with ``k`` labels of one split replaced by
  another class, drawn uniformly, at indices drawn uniformly; the indices and the original
  labels come with it.

Each returns a :class:`SyntheticDataset`; :meth:`SyntheticDataset.save` writes it as IDX
files, masks (``.npy``) and a manifest (:mod:`convlens.data.manifest`), which every
command reads through ``--data-dir DIR``. Everything is drawn from one
``numpy.random.default_rng(seed)``, so a seed gives the same bytes.

>>> bed = patch_mnist(rho=0.95, seed=0)                                # doctest: +SKIP
>>> bed.save("patch-095")                                             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from convlens.data.dataset import ImageDataset, load_dataset
from convlens.data.idx import read_idx_pair, write_idx
from convlens.data.manifest import FORMAT, MANIFEST, read_manifest
from convlens.data.masks import DILATION, THRESHOLD, foreground_masks
from convlens.errors import DataError

__all__ = [
    "KINDS",
    "SyntheticDataset",
    "check_out",
    "colored_mnist",
    "label_flip",
    "load_masks",
    "load_split",
    "make",
    "patch_mnist",
    "patch_positions",
]

KINDS = ("patch-mnist", "colored-mnist", "label-flip")
PatchSplit = Literal["aligned", "conflicting", "none"]
PATCH_SPLITS: tuple[PatchSplit, ...] = ("aligned", "conflicting", "none")


@dataclass(eq=False)
class SyntheticDataset:
    """A made dataset: its splits, masks (name -> boolean or integer array) and what was done.

    ``splits`` maps ``"train"``, ``"test"`` and any extra test split (``"conflicting"``) to
    an :class:`ImageDataset`; ``masks`` holds arrays saved as ``NAME.npy`` (``test-foreground``:
    ``(N, H, W)`` bool); ``details`` the parameters and ground truth (JSON-ready).
    """

    name: str
    title: str
    splits: dict[str, ImageDataset]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    based_on: str = "mnist"

    @property
    def train(self) -> ImageDataset:
        return self.splits["train"]

    @property
    def test(self) -> ImageDataset:
        return self.splits["test"]

    def _files(self) -> dict[str, str]:
        out = {}
        for split in self.splits:
            ndim = 3 if self.splits[split].shape[0] == 1 else 4
            stem = {"train": "train", "test": "t10k"}.get(split, f"t10k-{split}")
            out[f"{split}_images"] = f"{stem}-images-idx{ndim}-ubyte.gz"
            out[f"{split}_labels"] = f"{stem}-labels-idx1-ubyte.gz"
        return out

    def manifest(self) -> dict[str, Any]:
        """What ``dataset.json`` holds (see :mod:`convlens.data.manifest`)."""
        ref = self.train
        return {
            "convlens_dataset": FORMAT, "name": self.name, "title": self.title, "based_on": self.based_on,
            "classes": list(ref.classes), "label_kind": ref.label_kind, "mean": list(ref.mean), "std": list(ref.std),
            "files": self._files(), "extra_splits": [s for s in self.splits if s not in ("train", "test")],
            "masks": {k: f"{k}.npy" for k in self.masks}, "details": self.details,
        }

    def save(self, out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the dataset into directory ``out``, all or nothing (the manifest goes in last).

        An earlier dataset there is replaced only with ``overwrite``; a directory holding
        files convlens did not write is never replaced.
        """
        from convlens._atomic import AtomicDir

        target = Path(out)
        manifest = self.manifest()
        check_out(target, overwrite=overwrite)
        pending = AtomicDir(target, overwrite=overwrite)
        try:
            for split, ds in self.splits.items():
                images = ds.images.numpy()
                write_idx(pending.path / manifest["files"][f"{split}_images"], images[:, 0] if images.shape[1] == 1 else images)
                write_idx(pending.path / manifest["files"][f"{split}_labels"], ds.labels.numpy().astype(np.uint8))
            for name, mask in self.masks.items():
                np.save(pending.path / f"{name}.npy", mask)
            (pending.path / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        except BaseException:
            pending.abort()
            raise
        return pending.commit()


def _written(manifest: dict[str, Any]) -> list[str]:
    return [*manifest.get("files", {}).values(), *manifest.get("masks", {}).values(), MANIFEST]


def check_out(out: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Refuse to write a dataset into ``out`` where it would lose something: an earlier
    dataset (what its manifest lists) is replaced only with ``overwrite``; a directory
    holding anything else is never replaced (:func:`convlens._atomic.check_replaceable`)."""
    from convlens._atomic import check_replaceable

    p = Path(out)
    try:
        earlier = read_manifest(p) if p.is_dir() else None
    except DataError:
        earlier = None  # an unreadable manifest is the user's file, not ours
    check_replaceable(p, overwrite=overwrite, what="dataset", known=_written(earlier or {}) if earlier else (),
                      fix="choose another --out")


def _mnist(source: tuple[ImageDataset, ImageDataset] | None, data_dir: str | os.PathLike[str] | None
           ) -> tuple[ImageDataset, ImageDataset]:
    if source is not None:
        return source
    train, test = load_dataset("mnist", "train", data_dir=data_dir), load_dataset("mnist", "test", data_dir=data_dir)
    if train.name != "mnist":
        raise DataError(f"the test beds are made from MNIST, but the data directory holds {train.name} "
                        f"({Path(train.source).parent}); point --data-dir at the MNIST IDX files")
    return train, test


def _check_fraction(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise DataError(f"{name} must be a fraction in 0..1, got {value!r}")
    return v


def _with(ds: ImageDataset, images: np.ndarray, labels: np.ndarray, *, name: str, split: str, source: str,
          classes: tuple[str, ...] | None = None, label_kind: str | None = None) -> ImageDataset:
    return dataclasses.replace(
        ds, images=torch.from_numpy(np.ascontiguousarray(images)), labels=torch.from_numpy(labels.astype(np.int64)),
        name=name, split=split, source=source, classes=classes or ds.classes, label_kind=label_kind or ds.label_kind,
        mean=(0.0,) * images.shape[1], std=(1.0,) * images.shape[1])


def _normalised(splits: dict[str, ImageDataset]) -> dict[str, ImageDataset]:
    """Every split with the per-channel mean and std of the training images."""
    x = splits["train"].images
    mean = tuple(float(x[:, c].double().div(255).mean()) for c in range(x.shape[1]))
    std = tuple(float(x[:, c].double().div(255).std(unbiased=False)) or 1.0 for c in range(x.shape[1]))
    return {k: dataclasses.replace(v, mean=mean, std=std) for k, v in splits.items()}


# --- Patch-MNIST ---------------------------------------------------------------------------------


def patch_positions(height: int = 28, width: int = 28, patch: int = 6) -> np.ndarray:
    """The top-left corners ``(row, col)`` of the ten class positions, ``(10, 2)`` int:
    four along the top edge, four along the bottom, one in the middle of each side, one
    pixel in from the border. For 28×28 and the default 6-pixel patch::

        class:  0 (1,1)  1 (1,8)  2 (1,14)  3 (1,21)
                4 (21,1) 5 (21,8) 6 (21,14) 7 (21,21)
                8 (11,1) 9 (11,21)
    """
    if height < patch + 2 or width < patch + 2:
        raise DataError(f"images of {height}×{width} are too small for a {patch}-pixel patch one pixel from the border")
    cols = np.round(np.linspace(1, width - 1 - patch, 4)).astype(int)
    top, bottom, middle = 1, height - 1 - patch, (height - patch) // 2
    rows = [(top, c) for c in cols] + [(bottom, c) for c in cols] + [(middle, 1), (middle, width - 1 - patch)]
    return np.asarray(rows, dtype=np.int64)


def _patch_masks(positions: np.ndarray, where: np.ndarray, shape: tuple[int, int], patch: int) -> np.ndarray:
    """Boolean (N, H, W): a ``patch``-square at ``positions[where[n]]`` (no patch where ``where[n] < 0``)."""
    n = len(where)
    h, w = shape
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    r0 = np.where(where >= 0, positions[np.maximum(where, 0), 0], -10 * h)[:, None, None]
    c0 = np.where(where >= 0, positions[np.maximum(where, 0), 1], -10 * w)[:, None, None]
    out = (rows >= r0) & (rows < r0 + patch) & (cols >= c0) & (cols < c0 + patch)
    return out.reshape(n, h, w)


def _other_class(labels: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """For each label, another class drawn uniformly from the ``n_classes - 1`` others."""
    return (labels + rng.integers(1, n_classes, size=len(labels))) % n_classes


def _patched(ds: ImageDataset, where: np.ndarray, positions: np.ndarray, patch: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(patched images (N,1,H,W), patch masks (N,H,W), foreground masks (N,H,W)) of ``ds``."""
    images = ds.images.numpy().copy()
    _, _, h, w = images.shape
    pmask = _patch_masks(positions, where, (h, w), patch)
    fg = foreground_masks(images) & ~pmask  # the clean digit's mask, the patch taken out
    images[pmask[:, None].repeat(images.shape[1], 1)] = 255
    return images, pmask, fg


def patch_mnist(rho: float = 0.95, *, seed: int = 0, patch: int = 6, test: PatchSplit = "aligned",
                source: tuple[ImageDataset, ImageDataset] | None = None,
                data_dir: str | os.PathLike[str] | None = None) -> SyntheticDataset:
    """Patch-MNIST with a class-aligned patch in a fraction ``rho`` of the training images
    (see the module docstring). ``source`` is (train, test) MNIST in memory, else it is read
    from ``data_dir``. Splits: ``train``, ``test`` (= the ``test`` one of aligned /
    conflicting / none) and the two others by name; masks ``{split}-foreground`` and
    ``{split}-patch`` for every split."""
    rho = _check_fraction("rho", rho)
    if test not in PATCH_SPLITS:
        raise DataError(f"test must be one of {', '.join(PATCH_SPLITS)}, got {test!r}")
    train, base_test = _mnist(source, data_dir)
    n_classes = len(train.classes)
    _, _, h, w = train.images.shape
    positions = patch_positions(h, w, patch)
    if n_classes > len(positions):
        raise DataError(f"Patch-MNIST has {len(positions)} patch positions but the data has {n_classes} classes")
    rng = np.random.default_rng(seed)
    name, title = "patch-mnist", f"Patch-MNIST (rho={rho:g}, seed {seed})"
    y = train.labels.numpy()
    aligned = rng.random(len(y)) < rho
    where_train = np.where(aligned, y, _other_class(y, n_classes, rng))
    yt = base_test.labels.numpy()
    wheres = {"aligned": yt.copy(), "conflicting": _other_class(yt, n_classes, rng), "none": np.full(len(yt), -1)}
    splits: dict[str, ImageDataset] = {}
    masks: dict[str, np.ndarray] = {}
    images, masks["train-patch"], masks["train-foreground"] = _patched(train, where_train, positions, patch)
    splits["train"] = _with(train, images, y, name=name, split="train", source=title)
    for kind in (test, *(k for k in PATCH_SPLITS if k != test)):
        split = "test" if kind == test else kind
        images, masks[f"{split}-patch"], masks[f"{split}-foreground"] = _patched(base_test, wheres[kind], positions, patch)
        splits[split] = _with(base_test, images, yt, name=name, split="test", source=f"{title}, {kind} test split")
    details = {
        "kind": "patch-mnist", "rho": rho, "seed": seed, "patch": patch, "patch_value": 255,
        "positions": positions.tolist(), "test": test,
        "train_aligned": int(aligned.sum()), "train_size": len(y),
        "foreground": f"threshold {THRESHOLD}, dilation {DILATION}, on the clean digit; patch pixels excluded",
    }
    return SyntheticDataset(name, title, _normalised(splits), masks, details)


# --- Colored-MNIST -------------------------------------------------------------------------------


def _colour(images: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(N,1,H,W) gray digits -> (N,3,H,W): in channel 0 (red) where colour is 0, 1 (green) where 1."""
    out = np.zeros((len(images), 3, *images.shape[2:]), dtype=np.uint8)
    idx = np.arange(len(images))
    out[idx, colour] = images[:, 0]
    return out


def colored_mnist(*, seed: int = 0, label_noise: float = 0.25, environments: tuple[float, ...] = (0.1, 0.2),
                  test_e: float = 0.9, source: tuple[ImageDataset, ImageDataset] | None = None,
                  data_dir: str | os.PathLike[str] | None = None) -> SyntheticDataset:
    """Colored-MNIST after Arjovsky et al. (see the module docstring): binary labels with
    ``label_noise``, colour = label flipped with probability ``e``; the training images are
    split into equal consecutive parts, one per entry of ``environments``; the test split
    has ``e = test_e``. Masks: ``train-env`` (environment index per training image) and
    ``{split}-foreground``; ``details`` gives each environment's colour–label agreement."""
    label_noise = _check_fraction("label_noise", label_noise)
    test_e = _check_fraction("test_e", test_e)
    envs = tuple(_check_fraction("environment e", e) for e in environments)
    if not envs:
        raise DataError("Colored-MNIST needs at least one training environment")
    train, test = _mnist(source, data_dir)
    rng = np.random.default_rng(seed)
    name, title = "colored-mnist", f"Colored-MNIST (e={'/'.join(f'{e:g}' for e in envs)}, test e={test_e:g}, seed {seed})"
    classes = ("0-4", "5-9")
    splits: dict[str, ImageDataset] = {}
    masks: dict[str, np.ndarray] = {}
    agreement: dict[str, float] = {}
    env_index = np.minimum(np.arange(len(train)) * len(envs) // max(len(train), 1), len(envs) - 1)
    for split, ds in (("train", train), ("test", test)):
        digits = ds.labels.numpy()
        y = (digits >= 5).astype(np.int64)
        y = np.where(rng.random(len(y)) < label_noise, 1 - y, y)
        e = np.asarray(envs)[env_index] if split == "train" else np.full(len(y), test_e)
        colour = np.where(rng.random(len(y)) < e, 1 - y, y)
        images = _colour(ds.images.numpy(), colour)
        splits[split] = _with(ds, images, y, name=name, split=split, source=title, classes=classes, label_kind="class")
        masks[f"{split}-foreground"] = foreground_masks(images)
        if split == "train":
            for i, ev in enumerate(envs):
                agreement[f"train e={ev:g}"] = float((colour == y)[env_index == i].mean()) if (env_index == i).any() else 0.0
        else:
            agreement[f"test e={test_e:g}"] = float((colour == y).mean()) if len(y) else 0.0
    masks["train-env"] = env_index.astype(np.int64)
    details = {"kind": "colored-mnist", "seed": seed, "label_noise": label_noise, "environments": list(envs),
               "test_e": test_e, "colours": {"0": "red (channel 0)", "1": "green (channel 1)"},
               "colour_label_agreement": agreement,
               "foreground": f"threshold {THRESHOLD} on the brightest channel, dilation {DILATION}"}
    return SyntheticDataset(name, title, _normalised(splits), masks, details)


# --- Label-flip ----------------------------------------------------------------------------------


def label_flip(k: int = 50, *, split: Literal["train", "test"] = "test", seed: int = 0,
               source: tuple[ImageDataset, ImageDataset] | None = None,
               data_dir: str | os.PathLike[str] | None = None) -> SyntheticDataset:
    """MNIST with ``k`` labels of ``split`` flipped to another class (uniformly drawn), at
    ``k`` indices drawn uniformly without replacement. ``masks["{split}-flipped"]`` holds
    the indices (sorted), ``masks["{split}-original-labels"]`` every original label of
    the split; ``details["flipped"]`` the indices too."""
    if split not in ("train", "test"):
        raise DataError(f"split must be train or test, got {split!r}")
    train, test = _mnist(source, data_dir)
    ds = train if split == "train" else test
    if not 0 <= int(k) <= len(ds):
        raise DataError(f"k must be in 0..{len(ds)} (the size of the {split} split), got {k}")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ds), size=int(k), replace=False))
    original = ds.labels.numpy().copy()
    labels = original.copy()
    labels[idx] = _other_class(original[idx], len(ds.classes), rng)
    name, title = "label-flip", f"Label-flip MNIST ({k} {split} labels flipped, seed {seed})"
    splits = {s: _with(d, d.images.numpy(), labels if s == split else d.labels.numpy(), name=name, split=s, source=title)
              for s, d in (("train", train), ("test", test))}
    splits = {s: dataclasses.replace(d, mean=train.mean, std=train.std) for s, d in splits.items()}
    masks = {f"{split}-flipped": idx.astype(np.int64), f"{split}-original-labels": original.astype(np.int64)}
    details = {"kind": "label-flip", "k": int(k), "split": split, "seed": seed, "flipped": idx.tolist()}
    return SyntheticDataset(name, title, splits, masks, details)


# --- reading a made directory back ---------------------------------------------------------------


def make(kind: str, **options: Any) -> SyntheticDataset:
    """One of :data:`KINDS` by name, with its options (what ``convlens make-dataset`` calls)."""
    from convlens.errors import unknown_name

    makers = {"patch-mnist": patch_mnist, "colored-mnist": colored_mnist, "label-flip": label_flip}
    if kind not in makers:
        raise DataError(unknown_name("test bed", kind, makers))
    return makers[kind](**options)  # type: ignore[operator]


def _manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    d = read_manifest(folder)
    if d is None:
        raise DataError(f"{folder} holds no {MANIFEST}: it was not written by `convlens make-dataset`")
    return d


def load_masks(folder: str | os.PathLike[str], name: str) -> np.ndarray | None:
    """The mask ``name`` (``"test-foreground"``) saved in a made directory, or None if it has none."""
    d = _manifest(folder)
    fname = d.get("masks", {}).get(name)
    return None if fname is None else np.load(Path(folder) / fname, allow_pickle=False)


def load_split(folder: str | os.PathLike[str], split: str) -> ImageDataset:
    """Any split of a made directory, the extra test splits (``"conflicting"``) included."""
    d = _manifest(folder)
    if split in ("train", "test"):
        return load_dataset(d["name"], split, data_dir=folder)
    if split not in d.get("extra_splits", []):
        from convlens.errors import unknown_name

        raise DataError(unknown_name(f"split of {d['name']}", split, ["train", "test", *d.get("extra_splits", [])]))
    test = load_dataset(d["name"], "test", data_dir=folder)
    images, labels = read_idx_pair(Path(folder) / d["files"][f"{split}_images"], Path(folder) / d["files"][f"{split}_labels"])
    x = torch.from_numpy(images if images.ndim == 4 else images[:, None])
    return dataclasses.replace(test, images=x, labels=torch.from_numpy(labels.astype(np.int64)),
                               source=str((Path(folder) / d["files"][f"{split}_images"]).resolve()))
