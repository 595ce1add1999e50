"""Watch a network learn: a training callback that records it on a fixed probe set.

:class:`Tracker` records, at step 0, every ``every`` steps and at the last step:

* the first conv layer's filters;
* the feature maps of that layer and the Grad-CAM maps for the probe digits (the first
  test example of each class, at most ``digits`` of them);
* loss and accuracy on the probe set (the first ``probe`` test examples), and the
  training loss and accuracy the loop reports;
* each layer's weight change: ``‖W_t - W_prev‖ / ‖W_prev‖`` (relative to the previous
  record) and ``‖W_t - W_0‖ / ‖W_0‖`` (relative to the start);
* each conv layer's CKA against the previous record on the probe set
  (:func:`convlens.compare.cka`, linear, exact): representation drift, 1 for no change.

Every record is kept. After each epoch the tracker writes them into the run directory,
``RUN/tracking/`` (``tracking.json`` with the numbers, ``tracking.safetensors`` with the
arrays), and, when the optional ``tensorboard`` extra is installed, TensorBoard events to
``RUN/tracking/tensorboard/`` (scalars and images). TensorBoard keeps only 10 images per
tag unless told otherwise; :meth:`Tracker.hint` prints the command with
``--samples_per_plugin`` set so that no step is dropped.

Tracking never changes training: each record runs in eval mode, without touching any
``.grad`` (gradients are taken with :func:`torch.autograd.grad`), and restores the
training flags, the ``.grad`` of every parameter and the global RNG states (CPU, CUDA)
afterwards, so the parameters after N steps are bitwise those of an untracked run on the
CPU. A record can be taken inside ``torch.inference_mode()`` too (:meth:`Tracker.record`).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from convlens.errors import ConfigError, positive_int
from convlens.inspect._state import eval_mode

if TYPE_CHECKING:
    from convlens.data.dataset import ImageDataset

__all__ = ["DEFAULT_EVERY", "TRACKING", "Tracker", "load_tracking", "tensorboard_available"]

#: Steps between two records by default: chosen so that tracking adds at most 5% to the
#: demo's training (6 records in its 936 steps, about 0.06 CPU s each against 13 ms a
#: step; every 100 steps measured +7.5%: see benchmarks/featvis.py and
#: benchmarks/README.md). ``convlens evolution`` also draws the run's filter snapshots
#: (every 50 steps) between the records.
DEFAULT_EVERY = 200
#: The run's subdirectory the tracker writes.
TRACKING = "tracking"
_JSON, _TENSORS, _TB = "tracking.json", "tracking.safetensors", "tensorboard"
#: Bytes CKA may keep: small, so that it keeps the probe's features and n × n Gram
#: matrices (cheap for a few hundred inputs) rather than p × q cross products.
_CKA_BUDGET = 2**28


def tensorboard_available() -> bool:
    """Whether ``torch.utils.tensorboard`` can write events (the ``tensorboard`` extra)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _weighted(model: nn.Module) -> dict[str, Tensor]:
    """Every module with a ``weight`` parameter (conv, linear, norm layers), by name."""
    return {name: m.weight for name, m in model.named_modules()
            if name and isinstance(getattr(m, "weight", None), nn.Parameter)}


def _first_conv(model: nn.Module) -> str | None:
    return next((name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


class _Untouched:
    """Restores the global RNG states, the training flags and every parameter's
    ``.grad`` after the block, whatever it did."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        self.grads = [(p, p.grad) for p in self.model.parameters()]
        self.modes = eval_mode(self.model)
        self.modes.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.modes.__exit__()
        for p, g in self.grads:
            p.grad = g
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


class Tracker:
    """A training callback (see :class:`convlens.train.callbacks.Callback`) that records the
    network on a fixed probe set every ``every`` steps; see the module docs.

    ``probe`` is the number of test examples for loss, accuracy and CKA; ``digits`` the
    number of probe digits whose maps and CAMs are kept; ``tensorboard``: write TensorBoard
    events (``None``: when the extra is installed; ``True`` without it is an error).

    The loop shows the tracker its model, run directory and test data (``on_model``)
    before ``on_start``; :meth:`attach` does the same for your own loop.
    """

    def __init__(self, every: int = DEFAULT_EVERY, *, probe: int = 64, digits: int = 10,
                 tensorboard: bool | None = None, cam_method: str = "gradcam") -> None:
        self.every = positive_int("every", every)
        self.n_probe = positive_int("probe", probe)
        self.n_digits = positive_int("digits", digits)
        if tensorboard and not tensorboard_available():
            raise ConfigError("TensorBoard output needs the tensorboard package: pip install 'convlens[tensorboard]'")
        self.use_tb = tensorboard_available() if tensorboard is None else bool(tensorboard)
        self.cam_method = cam_method
        self.records: list[dict[str, Any]] = []
        self.arrays: dict[str, Tensor] = {}
        self.model: nn.Module | None = None
        self.out: Path | None = None
        self.total_steps = 0
        self._writer: Any = None
        self._tb_dir: Path | None = None
        self._last_step = -1

    # -- setup ------------------------------------------------------------------------------

    def attach(self, model: nn.Module, out: str | Path | None, probe: ImageDataset | Tensor,
               labels: Tensor | None = None) -> Tracker:
        """Watch ``model``, write into the run directory ``out`` (None: keep in memory), and
        use ``probe`` (an ImageDataset, whose first examples are taken, or normalised inputs
        (N, C, H, W) with their ``labels``)."""
        if isinstance(probe, Tensor):
            if probe.dim() != 4:
                raise ConfigError(f"probe inputs must be (N, C, H, W), got {tuple(probe.shape)}")
            x = probe[: self.n_probe].detach().clone()
            y = None if labels is None else torch.as_tensor(labels)[: self.n_probe].clone()
            pixels = None
        else:
            n = min(self.n_probe, len(probe))
            if n == 0:
                raise ConfigError("the probe set is empty: give test data with at least one example")
            x = probe.normalise(probe.images[:n])
            y = probe.labels[:n].clone()
            pixels = probe.images[:n]
        self.model = model
        self.out = None if out is None else Path(out)
        device = next(model.parameters(), torch.empty(0)).device
        self.x, self.y = x.to(device), None if y is None else y.to(device)
        # the probe digits: the first example of each class, in class order
        if self.y is not None:
            firsts = [int(torch.nonzero(self.y == c)[0]) for c in torch.unique(self.y).tolist()]
        else:
            firsts = list(range(len(self.x)))
        self.digits = torch.tensor(firsts[: self.n_digits], dtype=torch.long)
        self.layer = _first_conv(model)
        from convlens.compare import conv_layers

        self.conv_layers = conv_layers(model)
        self.arrays["probe/inputs"] = self.x[self.digits].detach().cpu().float()
        if pixels is not None:
            self.arrays["probe/pixels"] = pixels[self.digits].clone()
        if self.y is not None:
            self.arrays["probe/labels"] = self.y[self.digits].detach().cpu()
        with torch.no_grad():
            self._start = {k: w.detach().clone() for k, w in _weighted(model).items()}
            self._prev = dict(self._start)
        self._prev_model = copy.deepcopy(model).requires_grad_(False)
        for p in self._prev_model.parameters():
            p.grad = None
        return self

    def on_model(self, model: nn.Module, out: str | Path, test_data: ImageDataset) -> None:
        self.attach(model, out, test_data)

    # -- the callback protocol ---------------------------------------------------------------

    def on_start(self, total_steps: int, steps_per_epoch: int) -> None:
        if self.model is None:
            raise ConfigError("the tracker has no model: the training loop shows it one (on_model), or call attach()")
        self.total_steps = total_steps
        if self.use_tb:
            from torch.utils.tensorboard import SummaryWriter

            self._tb_dir = Path(tempfile.mkdtemp(prefix="convlens-tb-"))
            self._writer = SummaryWriter(str(self._tb_dir))
        self.record(0)

    def on_step(self, step: int, stats: dict[str, float]) -> None:
        if step % self.every == 0 or step == self.total_steps:
            self.record(step, stats)

    def on_epoch(self, record: dict[str, Any]) -> None:
        if self.out is not None and self.out.is_dir():
            self.write(self.out)

    def on_end(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tb_dir is not None:
            shutil.rmtree(self._tb_dir, ignore_errors=True)
            self._tb_dir = None

    # -- one record --------------------------------------------------------------------------

    def record(self, step: int, stats: dict[str, float] | None = None) -> dict[str, Any]:
        """Record the model now, as training step ``step``; returns the numbers recorded.
        Leaves the model, its gradients and the RNG states as they were; works inside
        ``torch.inference_mode()`` and ``torch.no_grad()``."""
        model = self.model
        if model is None:
            raise ConfigError("the tracker has no model: call attach(model, out, probe) first")
        if step == self._last_step:
            return self.records[-1]
        with _Untouched(model), torch.inference_mode(False):
            rec = self._measure(model, step, stats or {})
        self._last_step = step
        self.records.append(rec)
        if self._writer is not None:
            self._log(rec)
        return rec

    def _measure(self, model: nn.Module, step: int, stats: dict[str, float]) -> dict[str, Any]:
        import torch.nn.functional as F

        from convlens.inspect.capture import capture

        key = f"step_{step:08d}"
        rec: dict[str, Any] = {"step": step}
        rec.update({f"train_{k}": float(v) for k, v in stats.items() if k in ("loss", "acc")})
        with torch.no_grad():
            layers = [self.layer] if self.layer else []
            cap = capture(model, layers) if layers else None
            if cap is not None:
                with cap:
                    logits = model(self.x)
                layer = layers[0]
                maps = cap[layer]
                maps = maps[0] if isinstance(maps, list) else maps
                self.arrays[f"maps/{key}"] = maps[self.digits.to(maps.device)].detach().cpu().half()
                weight = model.get_submodule(layer).weight
                assert isinstance(weight, Tensor)  # for mypy: layer is a Conv2d
                self.arrays[f"filters/{key}"] = weight.detach().cpu().float().clone()
            else:
                logits = model(self.x)
            if self.y is not None and logits.dim() == 2:
                rec["probe_loss"] = float(F.cross_entropy(logits.float(), self.y))
                rec["probe_accuracy"] = float((logits.argmax(1) == self.y).float().mean())
            now = {k: w.detach().clone() for k, w in _weighted(model).items()}
            rec["weight_change"] = {k: _relative(now[k], self._prev[k]) for k in now}
            rec["weight_change_from_start"] = {k: _relative(now[k], self._start[k]) for k in now}
        rec["cka_previous"] = self._drift(model) if self.records else {k: 1.0 for k in self.conv_layers}
        if self.layer and logits.dim() == 2:
            with torch.enable_grad():
                from convlens.explain import cam

                result = cam(model, self.x[self.digits], method=self.cam_method)
            self.arrays[f"cams/{key}"] = result.normalised.detach().cpu().float()
            rec["cam_layer"] = ", ".join(result.layers)
        self._prev = now
        with torch.no_grad():
            self._prev_model.load_state_dict(model.state_dict())
        return rec

    def _drift(self, model: nn.Module) -> dict[str, float]:
        from convlens.compare import cka
        from convlens.compare.similarity import CKAWarning

        if not self.conv_layers:
            return {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CKAWarning)
            sim = cka(self._prev_model, model, self.x, layers_a=self.conv_layers, layers_b=self.conv_layers,
                      batch_size=len(self.x), memory_budget=_CKA_BUDGET, progress=False)
        return {name: float(sim.matrix[i, i]) for i, name in enumerate(self.conv_layers)}

    # -- output ------------------------------------------------------------------------------

    def _log(self, rec: dict[str, Any]) -> None:
        w, step = self._writer, rec["step"]
        for k in ("probe_loss", "probe_accuracy", "train_loss", "train_acc"):
            if k in rec:
                w.add_scalar(k.replace("_", "/", 1), rec[k], step)
        for group in ("weight_change", "weight_change_from_start", "cka_previous"):
            for layer, v in rec.get(group, {}).items():
                w.add_scalar(f"{group}/{layer}", v, step)
        key = f"step_{step:08d}"
        if f"filters/{key}" in self.arrays:
            w.add_image(f"{self.layer}/filters", _tile(self.arrays[f"filters/{key}"].numpy(), signed=True), step,
                        dataformats="HW")
            maps = self.arrays[f"maps/{key}"].float().numpy()  # (D, C, H, W)
            w.add_image(f"{self.layer}/maps", _tile(maps.transpose(1, 0, 2, 3), signed=False), step, dataformats="HW")
        if f"cams/{key}" in self.arrays:
            cams = self.arrays[f"cams/{key}"].numpy()[:, None]  # (D, 1, H, W)
            w.add_image("probe/cams", _tile(cams, signed=False), step, dataformats="HW")

    def hint(self, out: str | Path | None = None) -> str:
        """The TensorBoard command that shows every recorded step."""
        where = Path(out if out is not None else (self.out or "RUN")) / TRACKING / _TB
        n = max(len(self.records), 1)
        return f"tensorboard --logdir {where} --samples_per_plugin images={n},scalars={max(n, 1000)}"

    def write(self, out: str | Path) -> Path:
        """Write the records so far into ``out/tracking`` (atomically, replacing an earlier one)."""
        from safetensors.torch import save

        from convlens._atomic import atomic_dir

        target = Path(out) / TRACKING
        files = [_JSON, _TENSORS]
        with atomic_dir(target) as tmp:
            (tmp / _TENSORS).write_bytes(save({k: v.contiguous() for k, v in self.arrays.items()},
                                              metadata={"layer": self.layer or ""}))
            if self._writer is not None and self._tb_dir is not None:
                self._writer.flush()
                (tmp / _TB).mkdir()
                events = sorted(p.name for p in self._tb_dir.iterdir() if p.is_file())
                for name in events:
                    shutil.copyfile(self._tb_dir / name, tmp / _TB / name)
                (tmp / _TB / "manifest.json").write_text(json.dumps(
                    {"software": "convlens", "kind": "tensorboard", "files": events}, indent=2) + "\n")
            doc = {"software": "convlens", "kind": "tracking", "files": files, "layer": self.layer,
                   "every": self.every, "probe": len(self.x), "conv_layers": self.conv_layers,
                   "records": self.records}
            (tmp / _JSON).write_text(json.dumps(doc, indent=2) + "\n")
        return target


def _relative(now: Tensor, before: Tensor) -> float:
    base = float(before.double().norm())
    diff = float((now.double() - before.double()).norm())
    return diff / base if base > 0 else (0.0 if diff == 0 else math.inf)


def _tile(arrays: np.ndarray, *, signed: bool) -> np.ndarray:
    """(N, C, H, W) -> one 2-D image in [0, 1]: row i is item i, column c channel c."""
    from convlens.viz.filters import filter_mosaic

    a = np.asarray(arrays, dtype=np.float64)
    m = float(np.nanmax(np.abs(a))) or 1.0
    img = filter_mosaic(a)
    img = (0.5 + img / (2 * m)) if signed else (img - np.nanmin(a)) / ((np.nanmax(a) - np.nanmin(a)) or 1.0)
    return np.nan_to_num(np.clip(img, 0.0, 1.0), nan=1.0).astype(np.float32)


def load_tracking(run: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(tracking.json as a dict, arrays by key)`` of a run tracked with ``--track``."""
    from convlens.errors import RunError

    d = Path(run) / TRACKING
    if not (d / _JSON).is_file():
        raise RunError(f"{run} has no tracking records ({d / _JSON} is missing); train it with `convlens train --track`")
    from safetensors.torch import load_file

    try:
        doc = json.loads((d / _JSON).read_text())
        arrays = load_file(str(d / _TENSORS))
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot read the tracking records in {d}: {exc}; train the run again with --track") from None
    return doc, arrays
