"""One way to name "the model to look at": a run directory, or a user's own model.

Every command that reads a model accepts either a convlens run (``RUN``) or
``--model package.module:factory [--weights FILE]`` for any ``nn.Module``. Both
become a :class:`ModelHandle`: the model in eval mode, the shape of one input, and
the dataset it reads (name, normalisation, class names).

>>> h = open_model("convlens-demo/run")                                      # doctest: +SKIP
>>> h = open_model(spec="mypkg.nets:make_net", weights="net.pt", dataset="mnist")  # doctest: +SKIP

A user's model that reads other inputs than its dataset's says how they were
normalised (one value for every channel, or one per channel):

>>> h = open_model(spec="torch.nn:Identity", input_shape="3,32,32", mean="0.5", std="0.25")
>>> h.normalisation()
((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

A registered architecture opens untrained, to see the names and shapes it has:

>>> open_model(arch="seed-cnn").random_weights
True
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from convlens.errors import ConfigError
from convlens.models.run import DataSpec, Run, load_run


@dataclass
class ModelHandle:
    model: nn.Module
    input_shape: tuple[int, int, int]
    data: DataSpec
    name: str
    path: Path | None = None  # the run directory, if the model came from one
    run: Run | None = None
    random_weights: bool = False  # --model without --weights, or --arch: as the factory made it
    spec: str | None = None  # --model module:factory, and its --weights: how a worker rebuilds it
    weights: Path | None = None

    def normalisation(self, computed: tuple[Sequence[float], Sequence[float]] | None = None
                      ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``(mean, std)``, one value per input channel, as inputs are normalised for the
        model. A dataset without published constants has them ``computed`` from its
        training images (None: not computed yet).

        Raises:
            ConfigError: the dataset's normalisation has another number of channels
                than the model reads, and none was given (``--mean``/``--std``).
        """
        mean, std = (self.data.mean, self.data.std) if self.data.mean else (computed or ((), ()))
        if not mean:
            return None
        c = self.input_shape[0]
        if len(mean) == c and len(std) == c:
            return tuple(mean), tuple(std)
        raise ConfigError(
            f"the model reads {c} channels but the normalisation of {self.data.name} has {len(mean)} value(s); "
            f"pass --mean and --std with 1 or {c} values, as the model's training inputs were normalised "
            f"(e.g. --mean 0.5 --std 0.25)"
        )

    @classmethod
    def from_run(cls, run: Run) -> ModelHandle:
        return cls(run.model, run.input_shape, run.config.data, run.config.model.arch, run.path, run)

    def figures_dir(self, out: str | os.PathLike[str] | None = None) -> Path:
        """Where figures go: ``out`` if given, else ``RUN/figures`` or ``./figures``."""
        if out is not None:
            return Path(out)
        return (self.path / "figures") if self.path is not None else Path("figures")


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"1,28,28"`` or ``"1x28x28"`` → ``(1, 28, 28)``."""
    parts = text.replace("x", ",").replace("×", ",").split(",")
    try:
        c, h, w = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"input shape {text!r} must be three positive integers C,H,W, e.g. 1,28,28") from None
    shape = (c, h, w)
    if min(shape) < 1:
        raise ConfigError(f"input shape {text!r} must be three positive integers C,H,W, e.g. 1,28,28")
    return shape


def parse_floats(what: str, text: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.5,0.4,0.3"`` (or a sequence) → ``(0.5, 0.4, 0.3)``: finite numbers, at least one."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"--{what} {text!r} must be numbers separated by commas, one per channel or one for all, "
                          "e.g. 0.5 or 0.485,0.456,0.406")
    return values


def _normalisation(mean: str | Sequence[float] | None, std: str | Sequence[float] | None,
                   channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise ConfigError("give --mean and --std together (the normalisation the model was trained with)")
    m, s = parse_floats("mean", mean), parse_floats("std", std)
    for what, v in (("mean", m), ("std", s)):
        if len(v) not in (1, channels):
            raise ConfigError(f"--{what} has {len(v)} values but the model reads {channels} channels; "
                              f"give 1 value or {channels}")
    if min(s) <= 0:
        raise ConfigError(f"--std {std!r} must be positive (it divides the pixels)")
    return (m * channels if len(m) == 1 else m), (s * channels if len(s) == 1 else s)


#: The most input pixels (H × W) a model is opened for: 4096×4096.
MAX_INPUT_PIXELS = 4096 * 4096


def open_model(
    run: str | os.PathLike[str] | None = None,
    *,
    spec: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    input_shape: tuple[int, int, int] | str | None = None,
    dataset: str = "mnist",
    device: str = "cpu",
    mean: str | Sequence[float] | None = None,
    std: str | Sequence[float] | None = None,
    arch: str | None = None,
) -> ModelHandle:
    """Open a run directory, or build ``spec`` (``module:factory``) and load ``weights``,
    or build the registered architecture ``arch`` untrained (to see its layers).

    For a user's model, ``dataset`` says which data it reads (its class names and,
    unless ``mean`` and ``std`` are given, its normalisation), ``input_shape`` defaults
    to that dataset's (1, 28, 28). Inputs of another shape (e.g. RGB) are fitted to it.
    Without ``weights`` the model keeps the weights its factory gave it
    (``random_weights`` is True).
    """
    given = [n for n, v in (("a run directory", run), ("--model", spec), ("--arch", arch)) if v is not None]
    if len(given) > 1:
        raise ConfigError(f"give one model: {' or '.join(given)}, not both")
    if run is not None:
        if weights is not None:
            raise ConfigError("--weights goes with --model; a run directory has its own weights")
        if mean is not None or std is not None or input_shape is not None:
            raise ConfigError("--input-shape, --mean and --std go with --model; a run directory records its own")
        return ModelHandle.from_run(load_run(run, device=device))
    if spec is None and arch is None:
        raise ConfigError("no model given: pass a run directory (RUN) or --model module:factory")
    from convlens.data.spec import dataset_source

    src, data_shape = dataset_source(dataset)  # an IDX name, or a spec (folder:PATH, npz:PATH, cifar10, ...)
    shape = parse_shape(input_shape) if isinstance(input_shape, str) else (input_shape or data_shape or (1, 28, 28))
    if shape[1] * shape[2] > MAX_INPUT_PIXELS:
        raise ConfigError(f"input shape {shape[0]},{shape[1]},{shape[2]} has {shape[1] * shape[2]:,} pixels, "
                          f"more than the {MAX_INPUT_PIXELS:,} (4096×4096) convlens opens a model for; give a smaller "
                          "--input-shape")
    norm = _normalisation(mean, std, shape[0])
    m, s = norm if norm is not None else (tuple(src.mean or ()), tuple(src.std or ()))
    data = DataSpec(name=src.name, source="", classes=tuple(src.classes), mean=m, std=s)
    if arch is not None:
        from convlens.models.builder import build_cnn
        from convlens.models.registry import get_config

        if weights is not None:
            raise ConfigError("--weights goes with --model; for weights of a registered architecture run "
                              f"`convlens import-weights FILE --arch {arch} --out RUN`")
        cfg = get_config(arch, in_channels=shape[0], input_size=(shape[1], shape[2]), num_classes=len(src.classes))
        return ModelHandle(build_cnn(cfg).to(device).eval(), shape, data, arch, random_weights=True)
    from convlens.models.external import load_model

    assert spec is not None  # for mypy: run, spec or arch was given
    model = load_model(spec, weights, map_location=device)
    return ModelHandle(model, shape, data, spec, random_weights=weights is None, spec=spec,
                       weights=None if weights is None else Path(weights))
