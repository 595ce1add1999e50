"""Figures for the dataset passes: channel statistics and the top-k gallery."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.patches import Patch

from convlens.errors import ConfigError
from convlens.viz.describe import fmt, listing, top_indices
from convlens.viz.figure import Explained, new_figure
from convlens.viz.palettes import PaletteName
from convlens.viz.palettes import palette as get_palette

if TYPE_CHECKING:
    from convlens.inspect.stats import LayerStats
    from convlens.inspect.topk import TopK

__all__ = ["stats_figure", "topk_gallery"]


def _array(values: object) -> np.ndarray:
    """A tensor (on any device) or an array, as a NumPy array: drawn, not computed."""
    cpu = getattr(values, "cpu", None)
    return np.asarray(cpu() if callable(cpu) else values)


def _ints(values: Sequence[int], limit: int = 10) -> str:
    v = [str(i) for i in values]
    return listing(v) if len(v) <= limit else ", ".join(v[:limit]) + f" and {len(v) - limit} more"


def stats_figure(stats: LayerStats, *, palette: PaletteName = "default") -> Explained:
    """Per channel of one layer: mean ± std with the maximum, and how often it fires.

    Top panel: mean activation per channel with a one-standard-deviation bar and the
    maximum as a marker. Bottom panel: the share of inputs on which the channel fires at
    least once; dead channels are hatched, rarely active ones drawn in a second colour.
    """
    pal = get_palette(palette)
    cmap = matplotlib.colormaps[pal.sequential]
    c = stats.channels
    ch = np.arange(c)
    mean = _array(stats.mean)
    std = _array(stats.std)
    mx = _array(stats.max)
    active = _array(stats.active_fraction)
    zeros = _array(stats.zero_fraction)
    dead = _array(stats.dead)
    rare = _array(stats.rare)

    fig = new_figure(max(5.0, min(14.0, 1.5 + 0.22 * c)), 4.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    normal, rare_c, dead_c = cmap(0.3), cmap(0.85), "0.55"
    top.bar(ch, mean, color=normal, yerr=std, error_kw={"elinewidth": 0.8, "ecolor": "0.25", "capsize": 0}, label="mean ± std")
    top.plot(ch, mx, linestyle="none", marker="_", markersize=8, color="0.1", label="maximum")
    top.axhline(stats.threshold, color="0.5", linewidth=0.6)
    top.set_ylabel("activation")
    top.legend(fontsize=7, loc="upper right", frameon=False)
    colours = [dead_c if d else (rare_c if r else normal) for d, r in zip(dead, rare, strict=True)]
    bars = bottom.bar(ch, active * 100, color=colours, edgecolor="0.2", linewidth=0.3)
    for bar, d in zip(bars, dead, strict=True):
        if d:
            bar.set_hatch("///")
    # dead channels have no bar to hatch: mark them on the axis
    if dead.any():
        bottom.plot(ch[dead], np.zeros(int(dead.sum())), linestyle="none", marker="x", color="0.1", markersize=5)
    bottom.set_ylim(0, 105)
    bottom.set_ylabel("fires on % inputs")
    bottom.set_xlabel("channel")
    step = max(1, c // 32)
    bottom.set_xticks(ch[::step])
    bottom.tick_params(labelsize=7)
    handles = [Patch(color=normal, label="active"), Patch(color=rare_c, label=f"rare (< {stats.rare_below:.0%})"),
               Patch(facecolor=dead_c, hatch="///", label="dead (x)")]
    bottom.legend(handles=handles, fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, ncols=3,
                  borderaxespad=0.1)
    title = f"{stats.layer}: {c} channels over {stats.n_inputs:,} inputs"
    fig.suptitle(title, fontsize=10)

    dead_list, rare_list = [int(i) for i in ch[dead]], [int(i) for i in ch[rare]]
    busiest = top_indices(mean, 3)
    caption = (
        f"Per-channel activation statistics of {stats.layer} over {stats.n_inputs:,} inputs. Top: mean "
        f"with ±1 standard deviation and the maximum. Bottom: share of inputs on which the channel "
        f"fires (any value above {fmt(stats.threshold)}). {len(dead_list)} dead, {len(rare_list)} rarely "
        f"active (< {stats.rare_below:.0%} of inputs)."
    )
    alt = (
        f"Two bar charts over {c} channels of {stats.layer}. Means range from {fmt(float(mean.min()))} to "
        f"{fmt(float(mean.max()))}; the largest means are channels {_ints(busiest)}. Maxima reach "
        f"{fmt(float(mx.max()))}. On average {fmt(float(zeros.mean() * 100))}% of values are at or below "
        f"{fmt(stats.threshold)}. Dead channels: {_ints(dead_list) if dead_list else 'none'}. "
        f"Rarely active channels: {_ints(rare_list) if rare_list else 'none'}."
    )
    return Explained(
        fig, caption, alt, title=title,
        data={"layer": stats.layer, "mean": mean, "std": std, "max": mx, "active_fraction": active,
              "zero_fraction": zeros, "dead": dead_list, "rare": rare_list},
    )


#: The most tiles (crops and filters) one top-k gallery draws: 16 channels × 20.
MAX_GALLERY_TILES = 320


def check_gallery(rows: int, k: int, *, filters: bool = True) -> None:
    """Refuse a gallery of ``rows`` channels × ``k`` crops (+ a filter column) larger than
    :data:`MAX_GALLERY_TILES`, with the largest ``--k`` and channel count that fit."""
    cols = k + (1 if filters else 0)
    if rows * cols <= MAX_GALLERY_TILES:
        return
    fit_k = MAX_GALLERY_TILES // rows - (1 if filters else 0)
    fit_rows = MAX_GALLERY_TILES // cols
    fixes = [f"--k {fit_k} or less" if fit_k >= 1 else "", f"--channels with at most {fit_rows}" if fit_rows else ""]
    raise ConfigError(
        f"a top-k gallery of {rows} channels × {cols} tiles ({rows * cols}) is more than the {MAX_GALLERY_TILES} one "
        f"figure draws; ask for {' or '.join(f for f in fixes if f)}"
    )


def topk_gallery(
    topk: TopK,
    *,
    channels: Sequence[int] | None = None,
    max_channels: int = 16,
    palette: PaletteName = "default",
    on_row: Callable[[], None] | None = None,
) -> Explained:
    """One row per channel: its top-k input crops with their activation values.

    The crops are the model input under the receptive field of the unit where the channel
    peaks (blank where the field reaches past the image). When the layer looks at the input
    directly (the first conv), the row starts with the channel's filter. ``channels`` picks
    rows (default: the first ``max_channels`` computed channels); at most
    :data:`MAX_GALLERY_TILES` tiles are drawn (:func:`check_gallery`). ``on_row`` is
    called after each row is drawn (for a progress bar).
    """
    if topk.crops is None:
        raise ConfigError(f"top-k of {topk.layer} was computed without crops; compute it with crops=True")
    pal = get_palette(palette)
    rows = list(channels) if channels is not None else topk.channels[:max_channels]
    if not rows:
        raise ConfigError("no channels to show")
    check_gallery(len(rows), topk.k, filters=topk.filters is not None)
    idx = [topk.row(c) for c in rows]
    crops = _array(topk.crops[idx]).astype(np.float64)  # (R, k, C_in, h, w)
    values = _array(topk.values[idx])
    inputs = _array(topk.indices[idx])
    k = crops.shape[1]
    n_in = crops.shape[2]
    show_filters = topk.filters is not None
    finite = crops[np.isfinite(crops)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi == lo:
        hi = lo + 1.0
    cols = k + (1 if show_filters else 0)
    tile = 0.75 if max(topk.rf) > 4 else 0.6
    fig = new_figure(1.0 + cols * tile, 0.6 + len(rows) * (tile + 0.12))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    outside = ("yellow", "#f0e442") if pal.name != "gray" else ("white", "white")
    gray = matplotlib.colormaps[pal.image].with_extremes(bad=outside[1])  # pixels outside the image
    for r, ch in enumerate(rows):
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        if show_filters:
            assert topk.filters is not None  # for mypy: checked above
            f = _array(topk.filters[idx[r]]).astype(np.float64)  # (C_in, kh, kw)
            m = float(np.abs(f).max()) or 1.0
            if f.shape[0] == 3:  # an RGB filter in colour, as in the filters figure
                axes[r, 0].imshow(np.clip(0.5 + f.transpose(1, 2, 0) / (2 * m), 0, 1), interpolation="nearest")
            else:
                axes[r, 0].imshow(f.mean(axis=0), cmap=pal.diverging, vmin=-m, vmax=m, interpolation="nearest")
            axes[r, 0].set_ylabel(f"ch {ch}", fontsize=7)
            if r == 0:
                axes[r, 0].set_title("filter", fontsize=7)
        for j in range(k):
            ax = axes[r, j + (1 if show_filters else 0)]
            crop = crops[r, j]
            if n_in == 3:
                img = np.clip((crop.transpose(1, 2, 0) - lo) / (hi - lo), 0, 1)
                img = np.where(np.isnan(img), 1.0, img)
                ax.imshow(img, interpolation="nearest")
            else:
                ax.imshow(np.ma.masked_invalid(crop[0] if n_in == 1 else crop.mean(axis=0)), cmap=gray,
                          vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(f"{fmt(float(values[r, j]))}", fontsize=6, pad=1.5)
            ax.set_xlabel(f"#{int(inputs[r, j])}", fontsize=5, labelpad=1)
            if j == 0 and not show_filters:
                ax.set_ylabel(f"ch {ch}", fontsize=7)
        if on_row is not None:
            on_row()
    title = f"{topk.layer}: top {k} inputs per channel"
    fig.suptitle(title, fontsize=10)
    rf = f"{topk.rf[0]}×{topk.rf[1]}"
    first, last = rows[0], rows[-1]
    shown = f"channels {first}–{last}" if rows == list(range(first, last + 1)) else f"channels {_ints(rows)}"
    caption = (
        f"For {shown} of {topk.layer} (rows), the {k} of {topk.n_inputs:,} inputs that excite the channel most, "
        f"cropped to the {rf}-pixel receptive field of the unit where it peaks; above each crop its peak "
        f"activation, below it the input's index."
        + ((" The first column shows the channel's filter in colour (mid-gray zero; a red tile weighs red above "
            "green and blue)." if n_in == 3 else " The first column shows the channel's filter (red positive, blue "
            "negative).") if show_filters else "")
        + (f" {outside[0].capitalize()} pixels lie outside the image (padding)." if np.isnan(crops).any() else "")
    )
    strongest = top_indices(values[:, 0], 3)
    alt = (
        f"Gallery with {len(rows)} rows and {k} image crops of {rf} pixels per row, for {shown} of layer "
        f"{topk.layer}. Peak activations range from {fmt(float(values.min()))} to {fmt(float(values.max()))}. "
        f"Channels with the strongest single response: "
        f"{listing([f'{rows[i]} ({fmt(float(values[i, 0]))} on input {int(inputs[i, 0])})' for i in strongest])}."
    )
    return Explained(
        fig, caption, alt, title=title,
        data={"layer": topk.layer, "channels": rows, "values": values, "indices": inputs, "crops": crops,
              "filters": None if topk.filters is None else _array(topk.filters[idx])},
    )
