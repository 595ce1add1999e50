"""Ready-made views of a run: the figures of the tutorial and the demo that makes them.

These functions are what the command line, the report and the web app call; they
choose inputs, read the model through :mod:`convlens.inspect`, and hand numbers to
:mod:`convlens.viz`. Each figure comes back as an :class:`~convlens.viz.Explained`.

>>> run = convlens.load_run("convlens-demo/run")                      # doctest: +SKIP
>>> fig1 = filters(run, "conv1")                                     # doctest: +SKIP
>>> fig2 = maps(run, choose_input(run, digit=7), "conv1", stage="relu")  # doctest: +SKIP
>>> convlens.viz.save(fig2, "figures", "maps-conv1")                   # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convlens.errors import ConfigError
from convlens.models.handle import ModelHandle
from convlens.models.run import Run
from convlens.viz.figure import Explained


@dataclass
class ChosenInput:
    """One input, ready for the model (``x``: normalised 1×C×H×W) and for display."""

    x: torch.Tensor
    pixels: torch.Tensor  # (C, H, W) uint8 as drawn
    label: str  # e.g. "test digit 7 (index 0)"
    index: int | None = None
    true_class: int | None = None


def choose_input(
    source: Run | ModelHandle,
    *,
    digit: int | str | None = None,
    index: int | None = None,
    image: str | os.PathLike[str] | None = None,
    nth: int = 0,
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
) -> ChosenInput:
    """Pick exactly one of: the ``nth`` example of class ``digit``, example ``index``
    of ``split`` of the model's dataset, or an ``image`` file (fitted to the model's
    input size and normalised like the training data)."""
    given = [k for k, v in (("digit", digit), ("index", index), ("image", image)) if v is not None]
    if len(given) != 1:
        raise ConfigError("choose exactly one input: --digit D, --index N or --image FILE")
    handle = source if isinstance(source, ModelHandle) else ModelHandle.from_run(source)
    spec = handle.data
    from convlens.data import load_dataset, load_image, normalise

    if image is not None:
        c, h, w = handle.input_shape
        pixels = load_image(image, size=(h, w), channels=c)
        mean, std = spec.mean, spec.std
        if not mean:  # a dataset without published constants: the loader computes them
            ref = load_dataset(spec.name, "train", data_dir=data_dir)
            mean, std = ref.mean, ref.std
        return ChosenInput(normalise(pixels, mean, std), pixels[0], f"image {Path(image).name}")
    ds = load_dataset(spec.name, split, data_dir=data_dir)
    if spec.mean:
        ds.mean, ds.std = spec.mean, spec.std  # normalise exactly as in training
    i = ds.index_of(digit, nth) if digit is not None else int(index)  # type: ignore[arg-type]
    x, y = ds.item(i)
    return ChosenInput(x, ds.images[i], f"{split} {ds.label_kind} {ds.classes[y]} (index {i})", i, y)


def _model(source: Run | ModelHandle | nn.Module) -> nn.Module:
    return source if isinstance(source, nn.Module) else source.model


def filters(model: Run | ModelHandle | nn.Module, layer: str = "conv1", **kwargs: Any) -> Explained:
    """Figure 1: the filters of conv layer ``layer`` (see :func:`convlens.viz.filters.filters_figure`)."""
    from convlens.viz.filters import conv_weight, filters_figure

    return filters_figure(conv_weight(_model(model), layer), layer, **kwargs)


def maps(model: Run | ModelHandle | nn.Module, chosen: ChosenInput, layer: str = "conv1", *,
         stage: str = "conv", **kwargs: Any) -> Explained:
    """Figure 2: ``chosen`` beside the feature maps of ``layer`` at ``stage``."""
    from convlens.inspect.feature_maps import feature_maps
    from convlens.viz.maps import maps_figure

    m = _model(model)
    device = next(m.parameters(), torch.empty(0)).device
    fm = feature_maps(m, chosen.x.to(device), layer, stage)
    stage_name = stage if not fm.computed else f"{stage} (computed by convlens on {layer}'s output)"
    return maps_figure(chosen.pixels.numpy(), fm.maps[0].cpu().numpy(), layer, stage=stage_name,
                       input_label=chosen.label, **kwargs)


def evolution(run: Run, **kwargs: Any) -> Explained:
    """How the first layer's filters changed during training (from the run's snapshots)."""
    from convlens.viz.filters import filter_evolution_figure

    snaps = run.snapshots()
    if not snaps:
        raise ConfigError(f"run {run.path} recorded no filter snapshots; train it with snapshot_every > 0")
    if len(snaps) > 8:  # keep the figure readable: first, last and evenly spaced steps
        steps = sorted(snaps)
        keep = sorted({steps[round(i * (len(steps) - 1) / 7)] for i in range(8)})
        snaps = {s: snaps[s] for s in keep}
    return filter_evolution_figure({s: w.numpy() for s, w in snaps.items()}, run.snapshot_layer, **kwargs)
