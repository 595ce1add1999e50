"""Figure 1: the filters of a convolutional layer, drawn from their weights
(:func:`convlens.views.conv_weight` reads them from a model)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from convlens.errors import ConfigError
from convlens.viz.describe import filter_colour, fmt, listing, orientation, top_indices
from convlens.viz.figure import Explained, new_figure
from convlens.viz.palettes import OKABE_ITO, PaletteName
from convlens.viz.palettes import palette as get_palette

Scale = Literal["shared", "per-filter"]


def filter_mosaic(w: np.ndarray) -> np.ndarray:
    """Tile ``w`` (out, in, kh, kw) into one 2-D array: block (i, c) is ``w[i, c]``,
    blocks separated by one row/column of NaN (drawn in the colour map's "bad" colour).

    >>> filter_mosaic(np.arange(8.0).reshape(2, 1, 2, 2)).shape
    (5, 2)
    """
    n_out, n_in, kh, kw = w.shape
    padded = np.pad(np.asarray(w, dtype=np.float64), ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=np.nan)
    grid = padded.transpose(0, 2, 1, 3).reshape(n_out * (kh + 1), n_in * (kw + 1))  # (out·(kh+1), in·(kw+1))
    return grid[:-1, :-1]


def filters_figure(
    weight: np.ndarray,
    layer: str,
    *,
    scale: Scale = "shared",
    palette: PaletteName = "default",
    rgb: bool | None = None,
    max_filters: int | None = None,
) -> Explained:
    """Draw the filters ``weight`` (out, in, kh, kw) of ``layer`` in a grid.

    ``scale="shared"`` (default) uses one colour scale for all filters, symmetric
    around zero, with a colourbar; ``"per-filter"`` scales each filter to its own
    largest magnitude (labelled so in the title and caption). With 3 input channels
    filters are drawn as RGB images unless ``rgb=False``; otherwise each input
    channel gets its own column.
    """
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4:
        raise ConfigError(f"filter weights must be 4-D (out, in, kh, kw), got shape {w.shape}")
    if scale not in ("shared", "per-filter"):
        raise ConfigError(f"unknown scale {scale!r}: use 'shared' or 'per-filter'")
    if max_filters is not None:
        w = w[:max_filters]
    n_out, n_in, kh, kw = w.shape
    pal = get_palette(palette)
    as_rgb = (n_in == 3) if rgb is None else rgb
    if as_rgb and n_in != 3:
        raise ConfigError(f"rgb=True needs 3 input channels; {layer} has {n_in}")

    vmax_all = float(np.abs(w).max()) or 1.0
    per_filter_max = np.abs(w).reshape(n_out, -1).max(axis=1)
    per_filter_max[per_filter_max == 0] = 1.0

    norm = Normalize(-vmax_all, vmax_all)
    shown = []
    rgb_tiles: list[Any] = []  # the RGB images drawn, one per filter (as_rgb)
    if n_in == 1 or as_rgb:
        cols = int(np.ceil(np.sqrt(n_out * 1.6)))
        rows = int(np.ceil(n_out / cols))
        fig = new_figure(max(3.5, cols * 0.55 + 1.6), max(2.5, rows * 0.55 + 0.9))
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        for i in range(n_out):
            ax = axes.flat[i]
            m = vmax_all if scale == "shared" else per_filter_max[i]
            if as_rgb:
                rgb_tiles.append(ax.imshow(np.clip(0.5 + w[i].transpose(1, 2, 0) / (2 * m), 0, 1),
                                           interpolation="nearest"))
            else:
                shown.append(ax.imshow(w[i, 0], cmap=pal.diverging, norm=Normalize(-m, m), interpolation="nearest"))
            ax.set_title(str(i), fontsize=7, pad=2)
        bar_axes: Any = axes
        mosaic = None
    else:
        # one image for all filters × input channels (hundreds of small axes are slow):
        # row i of blocks is filter i, column c is input channel c, one NaN pixel between
        divisor = np.ones(n_out) if scale == "shared" else per_filter_max
        mosaic = filter_mosaic(w / divisor[:, None, None, None])
        fig = new_figure(max(3.5, n_in * (kw + 1) * 0.075 + 1.8), max(2.5, n_out * (kh + 1) * 0.075 + 0.9))
        ax = fig.add_subplot()
        cmap = colormaps[pal.diverging].with_extremes(bad="0.6" if pal.name != "gray" else OKABE_ITO[0])
        m = vmax_all if scale == "shared" else 1.0
        shown.append(ax.imshow(mosaic, cmap=cmap, norm=Normalize(-m, m), interpolation="nearest"))
        channel_names = ["R", "G", "B"] if n_in == 3 else [str(c) for c in range(n_in)]
        ax.set_xticks(np.arange(n_in) * (kw + 1) + (kw - 1) / 2, channel_names, fontsize=6)
        ax.set_yticks(np.arange(n_out) * (kh + 1) + (kh - 1) / 2, [str(i) for i in range(n_out)], fontsize=6)
        ax.tick_params(length=0)
        ax.set_xlabel("input channel", fontsize=8)
        ax.set_ylabel("filter", fontsize=8)
        for side in ax.spines.values():
            side.set_visible(False)
        bar_axes = ax
    scale_words = (
        f"one shared colour scale symmetric around zero ({fmt(-vmax_all)} to {fmt(vmax_all)})"
        if scale == "shared"
        else "per-filter colour scales (each filter stretched to its own largest magnitude, so "
        "brightness is not comparable between filters)"
    )
    title = f"{layer}: {n_out} filters {kh}×{kw}" + (" (per-filter scale)" if scale == "per-filter" else "")
    fig.suptitle(title, fontsize=10)
    if scale == "shared" and not as_rgb:
        cbar = fig.colorbar(
            ScalarMappable(norm=norm, cmap=pal.diverging),
            ax=bar_axes, shrink=0.6, fraction=0.04,
        )
        cbar.set_label("weight")
    norms = np.sqrt((w**2).reshape(n_out, -1).sum(axis=1))
    strongest = top_indices(norms, 3)
    described = [
        f"{i} ({orientation(w[i].mean(axis=0)) if n_in > 1 else orientation(w[i, 0])}"
        + (f", responds most to {filter_colour(w[i])}" if n_in == 3 else "") + ")" for i in strongest
    ]
    layout = (
        "as RGB images (each weight w drawn as 0.5 + w / 2m in its colour channel, m the largest magnitude, so "
        "mid-gray is zero and a red tile is a filter that weighs red above green and blue)" if as_rgb
        else ("one tile per filter" if n_in == 1 else
              "one row per filter and one column per input channel (3) in the order red, green, blue" if n_in == 3
              else f"one row per filter and one column per input channel ({n_in})")
    )
    colour = ("in colour" if as_rgb else "grayscale" if pal.name == "gray"
              else "red positive, blue negative, white zero")
    caption = (
        f"The {n_out} learned {kh}×{kw} filters of {layer} ({n_in} input channel{'s' * (n_in != 1)}), "
        f"{layout}, on {scale_words}; {colour}."
    )
    alt = (
        f"Grid of {n_out} filters of layer {layer}, each {kh}×{kw} pixels"
        f"{'' if n_in == 1 or as_rgb else f' per input channel, {n_in} input channels'}. "
        f"{'They are drawn as colour (RGB) tiles. ' if as_rgb else ''}"
        f"{'The columns are the red, green and blue channels. ' if n_in == 3 and not as_rgb else ''}"
        f"Weights range from {fmt(float(w.min()))} to {fmt(float(w.max()))}. "
        f"Strongest filters by weight norm: {listing(described)}."
    )
    return Explained(
        fig, caption, alt, title=title,
        data={"weights": w, "vmax": vmax_all, "scale": scale, "layer": layer, "images": shown, "rgb_tiles": rgb_tiles,
              "mosaic": mosaic, "strongest": strongest},
    )


def filter_evolution_figure(snapshots: dict[int, np.ndarray], layer: str, *, filters: int = 8,
                            palette: PaletteName = "default") -> Explained:
    """How the first ``filters`` filters of ``layer`` changed over training (rows: steps)."""
    steps = sorted(snapshots)
    if not steps:
        raise ConfigError("this run recorded no filter snapshots; train with snapshot_every > 0")
    pal = get_palette(palette)
    ws = [np.asarray(snapshots[s], dtype=np.float64) for s in steps]
    n = min(filters, ws[0].shape[0])
    vmax = max(float(np.abs(w[:n]).max()) for w in ws) or 1.0
    fig = new_figure(n * 0.6 + 1.8, len(steps) * 0.6 + 0.8)
    axes = fig.subplots(len(steps), n, squeeze=False)
    for r, (s, w) in enumerate(zip(steps, ws, strict=True)):
        for i in range(n):
            ax = axes[r, i]
            ax.imshow(w[i].mean(axis=0), cmap=pal.diverging, vmin=-vmax, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(str(i), fontsize=7)
            if i == 0:
                ax.set_ylabel(f"step {s}", fontsize=7)
    title = f"{layer}: filters during training"
    fig.suptitle(title, fontsize=10)
    caption = (
        f"Filters 0–{n - 1} of {layer} at {len(steps)} training steps ({steps[0]} to {steps[-1]}), "
        f"one shared colour scale symmetric around zero (±{fmt(vmax)})."
    )
    change = [float(np.abs(ws[-1][:n] - ws[0][:n]).mean())]
    alt = (
        f"Grid: rows are training steps {listing([str(s) for s in steps])}; columns are filters 0 to {n - 1} "
        f"of {layer}. Mean absolute weight change from first to last step: {fmt(change[0])}. The final filters: "
        f"{listing([f'{i} ({orientation(ws[-1][i].mean(axis=0))})' for i in range(n)])}."
    )
    return Explained(fig, caption, alt, title=title, data={"steps": steps, "vmax": vmax})
