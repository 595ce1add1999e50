"""Figures of what filters want and how they got there: feature visualisations beside
natural examples, first-layer filters labelled by kind, and the evolution animation
(GIF through Pillow). Draws the arrays it is given; computes nothing about a model."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize

from convlens.errors import ConfigError
from convlens.viz.describe import fmt, listing
from convlens.viz.figure import Explained, new_figure
from convlens.viz.palettes import OKABE_ITO, PaletteName
from convlens.viz.palettes import palette as get_palette

#: The most visualisation rows one figure draws.
MAX_ROWS = 64


def _ints(values: Sequence[int]) -> str:
    v = list(values)
    if v and v == list(range(v[0], v[-1] + 1)) and len(v) > 2:
        return f"{v[0]}–{v[-1]}"
    return ", ".join(str(i) for i in v[:12]) + (f" … ({len(v)} in all)" if len(v) > 12 else "")


def _show(ax: Any, img: np.ndarray, pal: Any) -> None:
    """One image (C, H, W) with values in [0, 1]: gray for 1 channel, RGB for 3, the
    channels' mean (gray) otherwise."""
    c = img.shape[0]
    if c == 3:
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    else:
        ax.imshow(img[0] if c == 1 else img.mean(axis=0), cmap=pal.image, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def featvis_figure(
    images: np.ndarray,
    channels: Sequence[int],
    layer: str,
    *,
    natural: np.ndarray | None = None,
    natural_values: np.ndarray | None = None,
    natural_index: np.ndarray | None = None,
    ratio: np.ndarray | None = None,
    similarity: np.ndarray | None = None,
    earlier: str = "",
    steps: int = 0,
    param: str = "",
    n_inputs: int = 0,
    split: str = "test",
    palette: PaletteName = "default",
) -> Explained:
    """One row per channel: its optimised image (first column) beside its natural top-k
    (``natural`` (N, k, C, H, W) pixels in [0, 1], with their activations), titled with
    the reliability scores (``ratio``: optimised / best natural activation, ``similarity``
    of the ``earlier`` layer's activations to the natural top-k's)."""
    imgs = np.asarray(images, dtype=np.float64)
    n = len(channels)
    if imgs.ndim != 4 or len(imgs) != n:
        raise ConfigError(f"images must be (N, C, H, W) for the {n} channels, got {imgs.shape}")
    if n > MAX_ROWS:
        raise ConfigError(f"a feature-visualisation figure draws at most {MAX_ROWS} channels; pick fewer (--channels)")
    pal = get_palette(palette)
    lo, hi = float(imgs.min()), float(imgs.max())
    if lo < 0 or hi > 1:  # the model input itself (max_norm): stretched for display
        imgs = (imgs - lo) / ((hi - lo) or 1.0)
    k = 0 if natural is None else natural.shape[1]
    cols = 1 + k
    tile = 0.85
    fig = new_figure(1.2 + cols * tile, 0.7 + n * (tile + 0.18))
    axes = fig.subplots(n, cols, squeeze=False)
    accent = OKABE_ITO[5] if pal.name != "gray" else "black"
    for r, ch in enumerate(channels):
        ax = axes[r, 0]
        _show(ax, imgs[r], pal)
        for side in ax.spines.values():
            side.set_color(accent)
            side.set_linewidth(2)
        words = f"ch {ch}"
        if ratio is not None:
            words += f"\n{fmt(float(ratio[r]))}× best"
        ax.set_ylabel(f"ch {ch}", fontsize=7)
        ax.set_title(words if r == 0 or ratio is not None else "", fontsize=6, pad=1.5)
        if similarity is not None:
            ax.set_xlabel(f"sim {float(similarity[r]):.2f}", fontsize=5.5, labelpad=1)
        for j in range(k):
            assert natural is not None  # for mypy: k > 0
            ax = axes[r, 1 + j]
            _show(ax, np.asarray(natural[r, j], dtype=np.float64), pal)
            if natural_values is not None:
                ax.set_title(fmt(float(natural_values[r, j])), fontsize=6, pad=1.5)
            if natural_index is not None:
                ax.set_xlabel(f"#{int(natural_index[r, j])}", fontsize=5, labelpad=1)
    title = f"{layer}: what each channel responds to most"
    fig.suptitle(title, fontsize=10)
    c_in = imgs.shape[1]
    shown = "grayscale" if c_in == 1 else ("RGB" if c_in == 3 else f"the mean of its {c_in} channels, grayscale")
    caption = (
        f"Feature visualisation of {layer} channel{'s' * (n > 1)} {_ints(channels)}: the first column (framed) is the input "
        f"optimised to excite the channel most ({steps} steps, {param} parametrisation, the model's own "
        f"{imgs.shape[2]}×{imgs.shape[3]} input, drawn as {shown})"
    )
    if k:
        caption += f"; beside it the {k} of {n_inputs:,} {split} images that excite it most, with their activations"
    caption += "."
    if ratio is not None and similarity is not None:
        caption += (
            f" Reliability: the optimised image reaches {fmt(float(np.nanmedian(ratio)))}× the best natural "
            f"activation (median over channels; the title of the first column), and its activations at {earlier} "
            f"have cosine similarity {float(np.median(similarity)):.2f} (median; under the first column) to "
            "those of the natural examples. A visualisation far above 1× with low similarity shows a pattern "
            "natural inputs do not contain: read it beside the examples."
        )
    alt_rows = []
    for r, ch in enumerate(channels[:16]):
        bits = [f"channel {ch}"]
        if ratio is not None:
            bits.append(f"{fmt(float(ratio[r]))} times the best natural activation")
        if similarity is not None:
            bits.append(f"similarity {float(similarity[r]):.2f}")
        alt_rows.append(" ".join(bits[:1]) + (": " + ", ".join(bits[1:]) if len(bits) > 1 else ""))
    alt = (
        f"Grid with one row per channel of {layer} ({n} rows): an optimised {imgs.shape[2]}×{imgs.shape[3]} image "
        f"framed in the first column" + (f", then the {k} most exciting natural {split} images" if k else "")
        + f". {listing(alt_rows)}" + (" and more." if n > 16 else ".")
    )
    data = {"images": imgs, "channels": list(channels), "ratio": ratio, "similarity": similarity,
            "natural_values": natural_values}
    return Explained(fig, caption, alt, data=data, title=title)


def _kind_label(kind: str, angle: float | None) -> str:
    return f"{kind} {angle:.0f}°" if angle is not None else kind


def kinds_figure(weight: np.ndarray, kinds: Sequence[str], angles: Sequence[float | None], r2: Sequence[float],
                 layer: str, summary: str, *, palette: PaletteName = "default") -> Explained:
    """The filters ``weight`` (out, in, kh, kw), each titled by its kind (and angle) and fit."""
    w = np.asarray(weight, dtype=np.float64)
    n = w.shape[0]
    pal = get_palette(palette)
    cols = int(np.ceil(np.sqrt(n * 1.6)))
    rows = int(np.ceil(n / cols))
    fig = new_figure(max(3.5, cols * 0.8 + 0.8), max(2.5, rows * 0.95 + 0.9))
    axes = fig.subplots(rows, cols, squeeze=False)
    m = float(np.abs(w).max()) or 1.0
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        ax = axes.flat[i]
        if w.shape[1] == 3:
            ax.imshow(np.clip(0.5 + w[i].transpose(1, 2, 0) / (2 * m), 0, 1), interpolation="nearest")
        else:
            ax.imshow(w[i].mean(axis=0), cmap=pal.diverging, vmin=-m, vmax=m, interpolation="nearest")
        ax.set_title(f"{i}: {_kind_label(kinds[i], angles[i])}\nR² {r2[i]:.2f}", fontsize=6, pad=1.5)
    title = f"{layer}: filter kinds"
    fig.suptitle(title, fontsize=10)
    counts = {k: list(kinds).count(k) for k in dict.fromkeys(kinds)}
    caption = (f"The {n} filters of {layer}, each labelled by the model that fits it best (a Gabor function: "
               f"oriented edge or bar with its angle; a difference of Gaussians: blob; neither: noise-like) and "
               f"the adjusted R² of that fit. {summary}.")
    alt = (f"Grid of {n} filters of {layer} with a kind above each. Counts: "
           + listing([f"{c} {k}" for k, c in counts.items()]) + f". {summary}.")
    return Explained(fig, caption, alt, data={"kinds": list(kinds), "angles": list(angles), "r2": list(r2)},
                     title=title)


def _frame(w: np.ndarray, step: int, steps: Sequence[int], oriented: Sequence[int], change: Sequence[float],
           i: int, layer: str, vmax: float, n_filters: int, pal: Any) -> np.ndarray:
    """One animation frame as an RGB array: the filters at ``step``, and the curves so far."""
    fig = new_figure(7.0, 3.2)
    left, right = fig.subplots(1, 2, width_ratios=[1.1, 1.0])
    spatial = w.mean(axis=1)  # (n, kh, kw): the channels' mean for several input channels
    n, kh, kw = spatial.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    tiles = np.full((rows * (kh + 1) - 1, cols * (kw + 1) - 1), np.nan)
    for f in range(n):
        r, c = divmod(f, cols)
        tiles[r * (kh + 1): r * (kh + 1) + kh, c * (kw + 1): c * (kw + 1) + kw] = spatial[f]
    left.imshow(tiles, cmap=pal.diverging, norm=Normalize(-vmax, vmax), interpolation="nearest")
    left.set_xticks([])
    left.set_yticks([])
    left.set_title(f"{layer} at step {step}", fontsize=9)
    right.plot(steps[: i + 1], oriented[: i + 1], color=OKABE_ITO[4], marker="o", ms=2.5, lw=1.5)
    right.set_xlim(steps[0], max(steps[-1], steps[0] + 1))
    right.set_ylim(-0.5, n_filters + 0.5)
    right.set_xlabel("training step", fontsize=8)
    right.set_ylabel("edge-like filters", fontsize=8, color=OKABE_ITO[4])
    right.tick_params(labelsize=7)
    twin = right.twinx()
    twin.plot(steps[: i + 1], change[: i + 1], color=OKABE_ITO[5], ls="--", lw=1.5)
    twin.set_ylim(0, max(max(change) * 1.1, 1e-6))
    twin.set_ylabel("weight change from step 0", fontsize=8, color=OKABE_ITO[5])
    twin.tick_params(labelsize=7)
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)  # for mypy: new_figure gives an Agg canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def evolution_animation(
    snapshots: dict[int, np.ndarray],
    oriented: Sequence[int],
    change: Sequence[float],
    layer: str,
    *,
    start_summary: str = "",
    end_summary: str = "",
    palette: PaletteName = "default",
    frame_ms: int = 400,
) -> tuple[Explained, bytes]:
    """The animation of ``layer``'s filters from the first snapshot to the last (a GIF),
    beside the number of edge-like filters (``oriented``) and the relative weight change
    from the first snapshot (``change``) over the steps; returns its last frame as a
    figure (with caption and alt text) and the GIF's bytes."""
    from PIL import Image

    steps = sorted(snapshots)
    if not steps:
        raise ConfigError("no filter snapshots to animate; train with snapshots (snapshot_every > 0) or --track")
    if len(oriented) != len(steps) or len(change) != len(steps):
        raise ConfigError("one count and one weight change per snapshot are needed")
    pal = get_palette(palette)
    ws = [np.asarray(snapshots[s], dtype=np.float64) for s in steps]
    vmax = max(float(np.abs(w).max()) for w in ws) or 1.0
    n = ws[0].shape[0]
    frames = [Image.fromarray(_frame(w, s, steps, oriented, change, i, layer, vmax, n, pal))
              for i, (s, w) in enumerate(zip(steps, ws, strict=True))]
    durations = [frame_ms] * len(frames)
    durations[-1] = frame_ms * 5  # rest on the trained filters
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    last = new_figure(7.0, 3.2)
    last.set_layout_engine("none")
    ax = last.add_axes((0, 0, 1, 1))
    ax.imshow(np.asarray(frames[-1]))
    ax.set_axis_off()
    title = f"{layer}: filters during training"
    caption = (
        f"{layer}'s {n} filters at {len(steps)} training steps ({steps[0]} to {steps[-1]}), one shared colour scale "
        f"symmetric around zero (±{fmt(vmax)}; red positive, blue negative); beside them the number of edge-like "
        f"(oriented edge or bar) filters, {oriented[0]} at step {steps[0]} and {oriented[-1]} at step {steps[-1]}, "
        f"and the relative weight change from step {steps[0]}, {fmt(float(change[-1]))} at the end."
    )
    alt = (
        f"Animation, {len(steps)} frames: the filter grid of {layer} from step {steps[0]} to {steps[-1]}, with a "
        f"line plot of edge-like filters rising from {oriented[0]} to {oriented[-1]} of {n} and a dashed line of "
        f"weight change growing to {fmt(float(change[-1]))}."
        + (f" At the start: {start_summary}." if start_summary else "")
        + (f" At the end: {end_summary}." if end_summary else "")
    )
    return Explained(last, caption, alt, title=title,
                     data={"steps": steps, "oriented": list(oriented), "change": list(change),
                           "frames": len(frames)}), buf.getvalue()
