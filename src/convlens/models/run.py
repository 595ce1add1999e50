"""A run is a directory (DESIGN principle 3).

``config.json``      model config (a :class:`CNNConfig`), data source, seed, training
                     hyperparameters, library versions
``model.safetensors`` the weights
``metrics.json``     per epoch: mean train loss, test loss, test accuracy (+ timing)
``snapshots/filters.safetensors``  first-layer filters at chosen training steps

Loading rebuilds the model from its config and the weights; nothing is unpickled.

>>> import tempfile, torch
>>> from convlens.models import build_model, get_config
>>> data = DataSpec("mnist", "an example", tuple("0123456789"), (0.1307,), (0.3081,))
>>> config = RunConfig(get_config("seed-cnn"), data, seed=0, train={}, versions=library_versions())
>>> tmp = tempfile.TemporaryDirectory()
>>> path = save_run(tmp.name + "/run", config, build_model("seed-cnn").state_dict(), {"epochs": []})
>>> run = load_run(path)
>>> run.input_shape, run.model(torch.zeros(1, *run.input_shape)).shape
((1, 28, 28), torch.Size([1, 10]))
>>> tmp.cleanup()
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convlens._atomic import atomic_dir, check_replaceable, claim
from convlens.errors import RunError
from convlens.models.builder import build_cnn
from convlens.models.config import CNNConfig
from convlens.models.state import state_dict_mismatch

CONFIG, WEIGHTS, METRICS, SNAPSHOTS = "config.json", "model.safetensors", "metrics.json", "snapshots"
#: What a run directory holds that convlens wrote (besides figures, which their sidecars list).
RUN_FILES = (CONFIG, WEIGHTS, METRICS, SNAPSHOTS, f"{SNAPSHOTS}/filters.safetensors", "figures")
FORMAT_VERSION = 1


@dataclass
class DataSpec:
    """Where the training data came from and how inputs are normalised.

    ``fingerprints`` holds, per split, the :class:`convlens.data.fingerprint.Fingerprint`
    of the data the model was trained and tested on (as dicts; empty in runs written
    before convlens recorded them), so later data can be checked against it.
    """

    name: str
    source: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int = 0
    test_size: int = 0
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        d = dict(d)
        for k in ("classes", "mean", "std"):
            d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class RunConfig:
    model: CNNConfig
    data: DataSpec
    seed: int
    train: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "model": self.model.to_dict(),
            "data": {**self.data.__dict__, "classes": list(self.data.classes),
                     "mean": list(self.data.mean), "std": list(self.data.std)},
            "seed": self.seed,
            "train": self.train,
            "versions": self.versions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(
            model=CNNConfig.from_dict(d["model"]), data=DataSpec.from_dict(d["data"]),
            seed=int(d["seed"]), train=dict(d["train"]), versions=dict(d.get("versions", {})),
            format=int(d.get("format", FORMAT_VERSION)),
        )


def library_versions() -> dict[str, str]:
    import matplotlib
    import numpy

    from convlens._version import version

    return {
        "convlens": version(), "torch": torch.__version__, "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__, "python": platform.python_version(),
    }


@dataclass
class Run:
    """A loaded run: ``model`` (in eval mode), ``config``, ``metrics``, ``path``."""

    path: Path
    config: RunConfig
    model: nn.Module
    metrics: dict[str, Any]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the inputs the model was trained on."""
        m = self.config.model
        return (m.in_channels, *m.input_size)

    @property
    def dataset_name(self) -> str:
        return self.config.data.name

    @property
    def test_accuracy(self) -> float | None:
        epochs = self.metrics.get("epochs", [])
        return float(epochs[-1]["test_accuracy"]) if epochs else None

    def snapshots(self) -> dict[int, torch.Tensor]:
        """First-layer filters by training step (empty if none were recorded)."""
        return load_snapshots(self.path)[1]

    @property
    def snapshot_layer(self) -> str:
        """The layer whose filters the snapshots hold ("" if none were recorded)."""
        return load_snapshots(self.path)[0]


def ensure_replaceable(path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Refuse to write a run where it would lose something (the output policy of
    :func:`convlens._atomic.check_replaceable`).

    An earlier run (with the figures convlens drew from it) is replaced only with
    ``overwrite`` (``--force``); a directory holding anything convlens did not write
    (``--out ~/thesis``, a note beside the figures) is never replaced: the error lists it.
    """
    check_replaceable(path, overwrite=overwrite, what="run", known=RUN_FILES)


def save_run(
    path: str | Path,
    config: RunConfig,
    state_dict: dict[str, torch.Tensor],
    metrics: dict[str, Any],
    snapshots: dict[int, torch.Tensor] | None = None,
    snapshot_layer: str = "conv1",
    *,
    overwrite: bool = False,
) -> Path:
    """Write a complete run directory atomically.

    An earlier run at ``path`` is replaced only with ``overwrite``, and never if the
    directory holds files convlens did not write (:func:`ensure_replaceable`). Every file
    gets the permissions a plain ``open`` gives (the umask decides, as for the JSON).
    """
    from safetensors.torch import save

    path = Path(path)
    ensure_replaceable(path, overwrite=overwrite)
    with atomic_dir(path) as tmp:
        (tmp / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        # bytes written with open(), not safetensors' save_file, which makes files private (0600)
        (tmp / WEIGHTS).write_bytes(save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}))
        if snapshots:
            (tmp / SNAPSHOTS).mkdir()
            (tmp / SNAPSHOTS / "filters.safetensors").write_bytes(save(
                {f"step_{step:08d}": w.detach().cpu().contiguous() for step, w in snapshots.items()},
                metadata={"layer": snapshot_layer},
            ))
        # metrics last: a directory with metrics.json is a finished write
        (tmp / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(
            f"{path.parent} is not a convlens run: {path.name} is missing "
            "(create one with `convlens train` or `convlens demo`)"
        ) from None
    except UnicodeDecodeError as exc:
        raise RunError(
            f"{path} is not a text file (byte {exc.start} is not UTF-8), so not the JSON convlens wrote; "
            f"restore {path.name} from a copy or create the run again with `convlens train`"
        ) from None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, a 5000-digit number
        raise RunError(f"cannot read {path}: {exc}; restore {path.name} from a copy or create the run again") from None
    if not isinstance(data, dict):
        raise RunError(f"cannot read {path}: expected a JSON object")
    return data


def load_run(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Run:
    """Load a run directory: rebuild the model from ``config.json`` and its weights.

    The returned model is in eval mode and its outputs are bit-identical to the model
    that was saved.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run directory {path} does not exist (create one with `convlens train` or `convlens demo`)")
    raw = _read_json(path / CONFIG)
    try:
        config = RunConfig.from_dict(raw)
        with torch.device("meta"):  # shapes only: a config asking for a huge model allocates nothing
            expected = build_cnn(config.model).state_dict()
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RuntimeError) as exc:
        # ConfigError is a ValueError; torch raises RuntimeError for sizes it cannot hold
        raise RunError(f"{path / CONFIG} is not a valid run config ({exc}); was it written by convlens?") from None
    metrics = _read_json(path / METRICS)
    try:
        state = load_file(str(path / WEIGHTS), device=str(device))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise RunError(f"cannot read the weights {path / WEIGHTS}: {exc}") from None
    problem = state_dict_mismatch(expected, state)
    if problem:
        raise RunError(f"{path / WEIGHTS} does not match {path / CONFIG}: {problem}; was one of them replaced?")
    model = build_cnn(config.model)
    model.load_state_dict(state)
    model.to(device).eval()
    return Run(path=path, config=config, model=model, metrics=metrics)


def load_snapshots(path: str | Path) -> tuple[str, dict[int, torch.Tensor]]:
    """``(layer, {step: filters})`` from a run's snapshots (``("", {})`` if it has none)."""
    from safetensors import safe_open

    f = Path(path) / SNAPSHOTS / "filters.safetensors"
    if not f.exists():
        return "", {}
    from safetensors import SafetensorError

    try:
        with safe_open(str(f), framework="pt") as fh:
            layer = (fh.metadata() or {}).get("layer", "")
            snaps = {int(k.split("_")[1]): fh.get_tensor(k) for k in sorted(fh.keys())}
    except (SafetensorError, OSError, ValueError, IndexError) as exc:
        raise RunError(f"cannot read the filter snapshots {f}: {exc}; delete the file or re-train") from None
    return layer, snaps


def import_weights(
    weights: str | Path,
    out: str | Path,
    *,
    arch: str = "seed-cnn",
    dataset: str = "mnist",
    overwrite: bool = False,
) -> Run:
    """Make a run directory from a foreign state dict for a registered architecture.

    ``out`` follows the output policy of :func:`save_run`: an earlier run there is
    replaced only with ``overwrite``, and a second process writing ``out`` meanwhile fails.

    ``weights`` is a ``.pt``/``.pth`` file, read only with
    ``torch.load(weights_only=True)`` (no pickled code runs), or a ``.safetensors``
    file. Its names and shapes must match ``arch`` exactly. The run records where the
    weights came from; its metrics hold no epochs (it was not trained here).
    """
    from convlens.data.spec import dataset_source
    from convlens.models.registry import get_config

    src, shape = dataset_source(dataset)
    c, h, w = shape or (1, 28, 28)
    cfg = get_config(arch, in_channels=c, input_size=(h, w), num_classes=len(src.classes))
    with claim(out):
        ensure_replaceable(out, overwrite=overwrite)
        return _import_into(out, weights, arch, cfg, src, overwrite)


def _import_into(out: str | Path, weights: str | Path, arch: str, cfg: CNNConfig, src: Any, overwrite: bool) -> Run:
    from convlens.models.external import load_state_dict_file

    state = load_state_dict_file(weights)
    model = build_cnn(cfg)
    problem = state_dict_mismatch(model.state_dict(), state)
    if problem:
        raise RunError(f"{weights} does not fit {arch}: {problem}; `convlens layers --arch {arch} --dataset "
                       f"{src.name}` lists the layers it expects")
    config = RunConfig(
        model=cfg,
        data=DataSpec(name=src.name, source="", classes=tuple(src.classes), mean=tuple(src.mean or ()),
                      std=tuple(src.std or ())),
        seed=-1,
        train={"imported_from": str(Path(weights).resolve())},
        versions=library_versions(),
    )
    save_run(out, config, state, {"epochs": [], "complete": True, "imported_from": str(weights)}, overwrite=overwrite)
    return load_run(out)
