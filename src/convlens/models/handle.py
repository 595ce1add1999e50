"""One way to name "the model to look at": a run directory, or a user's own model.

Every command that reads a model accepts either a convlens run (``RUN``) or
``--model package.module:factory [--weights FILE]`` for any ``nn.Module``. Both
become a :class:`ModelHandle`: the model in eval mode, the shape of one input, and
the dataset it reads (name, normalisation, class names).

>>> h = open_model("convlens-demo/run")                                      # doctest: +SKIP
>>> h = open_model(spec="mypkg.nets:make_net", weights="net.pt", dataset="mnist")  # doctest: +SKIP
"""

from __future__ import annotations

import os
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


def open_model(
    run: str | os.PathLike[str] | None = None,
    *,
    spec: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    input_shape: tuple[int, int, int] | str | None = None,
    dataset: str = "mnist",
    device: str = "cpu",
) -> ModelHandle:
    """Open a run directory, or build ``spec`` (``module:factory``) and load ``weights``.

    For a user's model, ``dataset`` says which data it reads (its normalisation and
    class names) and ``input_shape`` defaults to that dataset's (1, 28, 28).
    """
    if run is not None and spec is not None:
        raise ConfigError("give either a run directory or --model module:factory, not both")
    if run is not None:
        if weights is not None:
            raise ConfigError("--weights goes with --model; a run directory has its own weights")
        return ModelHandle.from_run(load_run(run, device=device))
    if spec is None:
        raise ConfigError("no model given: pass a run directory (RUN) or --model module:factory")
    from convlens.data.sources import get_source
    from convlens.models.external import load_model

    src = get_source(dataset)
    shape = parse_shape(input_shape) if isinstance(input_shape, str) else (input_shape or (1, 28, 28))
    model = load_model(spec, weights, map_location=device)
    data = DataSpec(name=src.name, source="", classes=tuple(src.classes), mean=tuple(src.mean or ()),
                    std=tuple(src.std or ()))
    return ModelHandle(model, shape, data, spec)
