"""Figure 2: an input beside the grid of its feature maps."""

from __future__ import annotations

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from convlens.errors import ConfigError
from convlens.viz.describe import fmt, listing, mean_colour, top_indices
from convlens.viz.figure import Explained, new_figure
from convlens.viz.palettes import PaletteName
from convlens.viz.palettes import palette as get_palette


def _image_for_display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    raw = np.asarray(image)
    img = raw.astype(np.float64)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim == 3 and img.shape[0] == 3:
        if raw.dtype == np.uint8:  # pixels as they are: the colours of the image
            return img.transpose(1, 2, 0) / 255.0, None
        lo, hi = img.min(), img.max()
        return (img.transpose(1, 2, 0) - lo) / ((hi - lo) or 1.0), None
    if img.ndim != 2:
        raise ConfigError(f"input image must be H×W, 1×H×W or 3×H×W, got shape {img.shape}")
    return img, "gray"


#: The most feature maps one figure draws (a request for more names ``--channels``).
MAX_MAP_TILES = 256


def maps_figure(
    image: np.ndarray,
    maps: np.ndarray,
    layer: str,
    *,
    stage: str = "conv",
    input_label: str = "input",
    sort: bool = False,
    scale: str = "shared",
    palette: PaletteName = "default",
    channels: list[int] | None = None,
) -> Explained:
    """Draw ``image`` beside the feature maps ``maps`` (C, H, W) of ``layer``.

    ``channels`` are the layer's channel numbers of the C maps (default ``0..C-1``), for
    a figure of some channels only; at most :data:`MAX_MAP_TILES` maps are drawn.
    Each map is titled with its channel and maximum activation. ``sort=True`` orders
    the maps by maximum activation, strongest first. ``scale="shared"`` (default)
    draws all maps on one colour scale with a colourbar; ``"per-map"`` stretches each.
    """
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim != 3:
        raise ConfigError(f"feature maps must be C×H×W, got shape {m.shape}")
    if scale not in ("shared", "per-map"):
        raise ConfigError(f"unknown scale {scale!r}: use 'shared' or 'per-map'")
    pal = get_palette(palette)
    c, h, w = m.shape
    if c > MAX_MAP_TILES:
        raise ConfigError(
            f"{c} feature maps are more than the {MAX_MAP_TILES} one figure draws; pick some channels "
            f"(--channels 0-{MAX_MAP_TILES - 1}, or channels=[...] in Python)"
        )
    label = list(range(c)) if channels is None else [int(i) for i in channels]
    if len(label) != c:
        raise ConfigError(f"{len(label)} channel numbers for {c} feature maps; give one per map")
    maxima = m.reshape(c, -1).max(axis=1)
    order = top_indices(maxima, c) if sort else list(range(c))
    lo, hi = float(m.min()), float(m.max())
    if hi == lo:
        hi = lo + 1.0
    norm = Normalize(lo, hi)

    cols = int(np.ceil(np.sqrt(c * 1.5)))
    rows = int(np.ceil(c / cols))
    tile = 0.95
    fig = new_figure(cols * tile + 2.6, max(2.6, rows * (tile + 0.1) + 0.6))
    gs = fig.add_gridspec(rows, cols + 2, width_ratios=[2.2, 0.25] + [1] * cols)
    ax_in = fig.add_subplot(gs[:, 0])
    disp, cmap = _image_for_display(image)
    ax_in.imshow(disp, cmap=cmap, interpolation="nearest")
    ax_in.set_title(input_label, fontsize=8)
    ax_in.set_axis_off()
    shown = []
    axes = []
    for pos, ch in enumerate(order):
        ax = fig.add_subplot(gs[pos // cols, 2 + pos % cols])
        axes.append(ax)
        n = norm if scale == "shared" else Normalize(float(m[ch].min()), float(m[ch].max()) or 1.0)
        shown.append(ax.imshow(m[ch], cmap=pal.sequential, norm=n, interpolation="nearest"))
        ax.set_title(f"{label[ch]}: max {fmt(float(maxima[ch]))}", fontsize=6, pad=2)
        ax.set_axis_off()
    title = f"{layer} ({stage}): {c} feature maps {h}×{w}"
    fig.suptitle(title, fontsize=10)
    if scale == "shared":
        fig.colorbar(ScalarMappable(norm=norm, cmap=pal.sequential), ax=axes, shrink=0.6, fraction=0.04).set_label("activation")
    strongest = top_indices(maxima, 3)
    silent = [int(i) for i in np.flatnonzero(np.all(m.reshape(c, -1) <= 0, axis=1))]
    which = "" if channels is None else f" (channels {listing([str(i) for i in label[:8]])}{' and more' if c > 8 else ''})"
    order_words = ", ordered by maximum activation" if sort else ""
    scale_words = (
        f"one shared colour scale from {fmt(lo)} to {fmt(float(m.max()))}"
        if scale == "shared"
        else "per-map colour scales (brightness not comparable between maps)"
    )
    caption = (
        f"The {c} feature maps{which} of {layer} at stage {stage} for {input_label}, each {h}×{w}{order_words}, "
        f"on {scale_words}; each map is titled with its channel and maximum activation."
    )
    colour_words = (f" (a colour image, {disp.shape[0]}×{disp.shape[1]} RGB pixels, mostly {mean_colour(disp.transpose(2, 0, 1))})"
                    if disp.ndim == 3 else "")
    alt = (
        f"{input_label[:1].upper()}{input_label[1:]}{colour_words} on the left; on the right a grid of {c} feature maps of layer {layer} ({stage}), "
        f"each {h}×{w} pixels, values from {fmt(float(m.min()))} to {fmt(float(m.max()))}. "
        f"Strongest channels: {listing([f'{label[i]} (max {fmt(float(maxima[i]))})' for i in strongest])}."
        + (f" {len(silent)} channel{'s' * (len(silent) != 1)} silent (no positive activation): "
           f"{listing([str(label[i]) for i in silent[:8]])}{' and more' if len(silent) > 8 else ''}." if silent else "")
    )
    return Explained(
        fig, caption, alt, title=title,
        data={"maps": m, "input": disp, "order": order, "maxima": maxima, "images": shown, "strongest": strongest,
              "silent": silent, "channels": label},
    )
