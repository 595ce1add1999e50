"""Pictures of the convolution itself.

* :func:`explanation_table`: the terminal table of one output value (rich);
* :func:`explanation_figure`: window on the padded input, kernel, products, output map;
* :func:`explanation_gif`: the window sliding and the feature map filling in (Pillow);
* :func:`hyperparameter_panel`: one input and one kernel under several stride,
  padding and dilation settings, every map drawn at its true size;
* :func:`kernel_figure`: kernels (classic or learned) and the maps they make.

The numbers come from :mod:`convlens.conv` (through :mod:`convlens.views`); this module
only draws and describes the arrays it is given.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle

from convlens._atomic import write_files
from convlens.errors import ConfigError, positive_int
from convlens.viz.describe import fmt, listing, orientation
from convlens.viz.figure import Explained, new_figure
from convlens.viz.palettes import PaletteName
from convlens.viz.palettes import palette as get_palette

if TYPE_CHECKING:  # the type of the numbers drawn, not a dependency at run time
    from convlens.conv.explain import Trace

__all__ = [
    "Animation",
    "explanation_figure",
    "explanation_gif",
    "explanation_table",
    "hyperparameter_panel",
    "kernel_figure",
]


def _setup_words(e: Trace) -> str:
    top, bottom, left, right = e.pad
    pad = f"{top}" if len({top, bottom, left, right}) == 1 else f"top {top}, bottom {bottom}, left {left}, right {right}"
    words = f"stride {_pair_words(e.stride)}, padding {pad}"
    if any(e.pad) and e.padding_mode != "zeros":
        words += f" ({e.padding_mode})"
    words += f", dilation {_pair_words(e.dilation)}"
    return words + (", true convolution (kernel rotated 180°)" if e.flip else "")


def _pair_words(p: tuple[int, int]) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}×{p[1]}"


def _focus_channel(e: Trace) -> int:
    """The input channel that contributes most (in absolute value) to the explained value."""
    return int(np.argmax(np.abs(e.channel_sums)))


# ------------------------------------------------------------------- text table
def explanation_table(e: Trace, *, max_channels: int = 3) -> Any:
    """A rich renderable: each tap's ``input × weight = product``, the sum, the bias.

    With several input channels the per-channel subtotals are listed (largest first)
    and the taps are shown for the ``max_channels`` largest contributors.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    i, j = e.position
    (r0, r1), (c0, c1) = e.span
    n_ch, kh, kw = e.kernel.shape
    parts: list[Any] = [
        Text.from_markup(
            f"[bold]out[{i}, {j}][/] of a {e.output.shape[0]}×{e.output.shape[1]} map: "
            f"{kh}×{kw} kernel on input rows {r0}..{r1}, columns {c0}..{c1} "
            f"({_setup_words(e)})"
        )
    ]
    order = list(np.argsort(-np.abs(e.channel_sums), kind="stable"))
    if n_ch > 1:
        sums = Table(title=f"{n_ch} input channels, largest contributions first", title_justify="left")
        sums.add_column("channel", justify="right")
        sums.add_column("Σ products", justify="right")
        for ch in order[: max(max_channels, 8)]:
            sums.add_row(str(ch), f"{e.channel_sums[ch]:+.4g}")
        if n_ch > max(max_channels, 8):
            rest = float(e.channel_sums[order[max(max_channels, 8):]].sum())
            sums.add_row(f"{n_ch - max(max_channels, 8)} more", f"{rest:+.4g}")
        parts.append(sums)
    image_rows, image_cols = e.image_rows, e.image_cols
    for ch in order[:max_channels] if n_ch > 1 else [0]:
        grid = Table(
            title=(f"channel {ch}: " if n_ch > 1 else "") + "input×weight, product below",
            title_justify="left", show_lines=True,
        )
        grid.add_column("row \\ col", justify="right", style="dim")
        for b in range(kw):
            col = int(image_cols[b])
            grid.add_column(str(col), justify="right")
        for a in range(kh):
            cells = []
            for b in range(kw):
                v, w, p = e.window[ch, a, b], e.kernel[ch, a, b], e.products[ch, a, b]
                mark = "·" if not e.in_image[a, b] else ""
                style = "dim" if not e.in_image[a, b] else ("bold" if abs(p) == np.abs(e.products[ch]).max() and p != 0 else "")
                cell = f"{mark}{v + 0.0:.2g}×{w + 0.0:.2g}\n{p + 0.0:+.3g}"
                cells.append(Text(cell, style=style))
            grid.add_row(str(int(image_rows[a])), *cells)
        parts.append(grid)
    if not e.in_image.all():
        parts.append(Text(f"· marks the {e.taps_in_padding} taps in the {e.padding_mode} padding", style="dim"))
    parts.append(
        Text.from_markup(
            f"Σ of {e.products.size} products = {float(e.products.sum()):.6g};  + bias {e.bias:.6g}  "
            f"= [bold]{float(e.total):.6g}[/]   (reference conv2d: {float(e.value):.6g})"
        )
    )
    return Group(*parts)


# ----------------------------------------------------------------------- figure
def _annotate(ax: Any, values: np.ndarray, norm: Normalize, limit: int = 49) -> None:
    if values.size > limit:
        return
    for (a, b), v in np.ndenumerate(values):
        light = abs(float(norm(v)) - 0.5) > 0.3  # dark ends of a diverging map
        ax.text(b, a, f"{v + 0.0:.2g}", ha="center", va="center", fontsize=6, color="white" if light else "black")


def _symmetric(values: np.ndarray) -> Normalize:
    m = float(np.abs(values).max()) or 1.0
    return Normalize(-m, m)


def explanation_figure(e: Trace, *, palette: PaletteName = "default", label: str = "") -> Explained:
    """Four panels: the window on the padded input, the kernel, the products, the map.

    ``label`` names the input and kernel in the title and caption (e.g.
    ``"digit 7 ⋆ conv1:3"``). With several input channels the panels show the
    channel that contributes most; the caption says so.
    """
    pal = get_palette(palette)
    ch = _focus_channel(e)
    n_ch, kh, kw = e.kernel.shape
    i, j = e.position
    hp, wp = e.padded.shape[1:]
    ho, wo = e.output.shape
    (r0, r1), (c0, c1) = e.span
    fig = new_figure(11.0, 3.3)
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [wp / hp * 1.2, 1, 1, wo / ho * 1.2]})
    # 1: the padded input with the padding shaded and the taps marked
    ax = axes[0]
    ax.imshow(e.padded[ch], cmap=pal.image, interpolation="nearest")
    top, _, left, _ = e.pad
    h, w = e.image.shape[1:]
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, ec="#888888", lw=0.8, ls="--"))
    ax.add_patch(Rectangle((e.cols[0] - 0.5, e.rows[0] - 0.5), e.cols[-1] - e.cols[0] + 1, e.rows[-1] - e.rows[0] + 1,
                           fill=False, ec="#E69F00", lw=2))
    rr, cc = np.meshgrid(e.rows, e.cols, indexing="ij")
    ax.scatter(cc.ravel(), rr.ravel(), s=6, c="#E69F00", marker="s")
    ax.set_title(f"padded input {hp}×{wp}" + (f" (channel {ch} of {n_ch})" if n_ch > 1 else ""), fontsize=8)
    # 2: kernel, 3: products
    for ax, values, name in ((axes[1], e.kernel[ch], "kernel" + (" (rotated 180°)" if e.flip else "")),
                             (axes[2], e.products[ch], "input × kernel")):
        norm = _symmetric(values)
        ax.imshow(values, cmap=pal.diverging, norm=norm, interpolation="nearest")
        _annotate(ax, values, norm)
        ax.set_title(f"{name} {kh}×{kw}", fontsize=8)
    # 4: output map with the explained cell
    ax = axes[3]
    norm = _symmetric(e.output)
    ax.imshow(e.output, cmap=pal.diverging, norm=norm, interpolation="nearest")
    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="#E69F00", lw=2))
    ax.set_title(f"output {ho}×{wo}: out[{i}, {j}] = {float(e.total):.4g}", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    title = f"How out[{i}, {j}] is made" + (f": {label}" if label else "")
    fig.suptitle(title, fontsize=10)
    pad_words = f"{e.taps_in_padding} of its {kh * kw} taps fall in the padding" if e.taps_in_padding else "all taps fall on the image"
    channel_words = (
        f" Shown: input channel {ch} of {n_ch}, which contributes {e.channel_sums[ch]:+.3g} of the sum."
        if n_ch > 1 else ""
    )
    caption = (
        f"{title}. The {kh}×{kw} kernel ({_setup_words(e)}) covers input rows {r0}–{r1} and "
        f"columns {c0}–{c1}; {pad_words}. The {e.products.size} products sum to "
        f"{float(e.products.sum()):.4g}; with the bias {e.bias:.4g} that gives {float(e.total):.4g}, "
        f"the value at ({i}, {j}) of the {ho}×{wo} output map.{channel_words}"
    )
    big = np.unravel_index(int(np.argmax(np.abs(e.products[ch]))), (kh, kw))
    alt = (
        f"Four panels. First, the {h}×{w} input padded to {hp}×{wp}, with an orange box on the "
        f"{kh}×{kw} window at rows {r0} to {r1}, columns {c0} to {c1}. Second, the kernel, values "
        f"{fmt(float(e.kernel[ch].min()))} to {fmt(float(e.kernel[ch].max()))}. Third, the products, "
        f"the largest in magnitude {fmt(float(e.products[ch][big]))} at kernel position {tuple(int(v) for v in big)}. "
        f"Fourth, the {ho}×{wo} output map, values {fmt(float(e.output.min()))} to "
        f"{fmt(float(e.output.max()))}, with cell ({i}, {j}) = {fmt(float(e.total))} outlined."
    )
    return Explained(fig, caption, alt, title=title, data={
        "padded": e.padded[ch], "kernel": e.kernel[ch], "products": e.products[ch], "output": e.output,
        "position": e.position, "total": float(e.total), "channel": ch,
    })


# -------------------------------------------------------------------------- GIF
@dataclass
class Animation:
    """An animated GIF with the words that describe it (like :class:`Explained`)."""

    gif: bytes
    frames: int
    caption: str
    alt: str
    title: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | Path, stem: str, *, overwrite: bool = False) -> dict[str, Path]:
        """Write ``stem.gif`` and ``stem.json`` (caption, alt text), both or neither; an
        existing ``stem`` is replaced only with ``overwrite`` (as :func:`convlens.viz.save`)."""
        gif, js = f"{stem}.gif", f"{stem}.json"
        sidecar = {"title": self.title, "caption": self.caption, "alt": self.alt, "gif": gif,
                   "frames": self.frames, "software": "convlens", "files": [gif]}
        paths = write_files(out_dir, {gif: self.gif, js: (json.dumps(sidecar, indent=2) + "\n").encode()},
                            overwrite=overwrite)
        return {"gif": paths[gif], "json": paths[js]}


def _rgb(values: np.ndarray, cmap: str, norm: Normalize) -> np.ndarray:
    return (colormaps[cmap](norm(values))[..., :3] * 255).astype(np.uint8)


def _upscale(rgb: np.ndarray, cell: int) -> np.ndarray:
    return np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)


def explanation_gif(
    e: Trace,
    *,
    palette: PaletteName = "default",
    max_frames: int = 120,
    cell: int | None = None,
    frame_ms: int = 120,
    label: str = "",
) -> Animation:
    """The kernel window sliding over the padded input while the output map fills in.

    One frame per output position in reading order; larger maps advance several
    positions per frame so there are at most ``max_frames`` frames (the last frame
    always shows the complete map, and is held longer). ``cell`` is the size of one
    pixel in screen pixels (chosen from the map size by default).
    """
    from PIL import Image, ImageDraw, ImageFont

    max_frames = positive_int("max_frames", max_frames)
    pal = get_palette(palette)
    ho, wo = e.output.shape
    n_ch, hp, wp = e.padded.shape
    if cell is None:
        cell = int(max(4, min(24, 300 // max(hp, wp, ho, wo))))
    shown = e.padded.mean(axis=0) if n_ch > 1 else e.padded[0]
    lo, hi = float(shown.min()), float(shown.max())
    gray = ((shown - lo) / ((hi - lo) or 1.0) * 255).astype(np.uint8)
    left_img = _upscale(np.stack([gray] * 3, axis=-1), cell)
    top, _, left, _ = e.pad
    h, w = e.image.shape[1:]
    norm = _symmetric(e.output)
    out_rgb = _upscale(_rgb(e.output, pal.diverging, norm), cell)
    gap, text_h = 2 * cell + 8, 34
    width = wp * cell + gap + wo * cell
    height = max(hp, ho) * cell + text_h
    font = ImageFont.load_default(size=12)
    positions = ho * wo
    step = max(1, math.ceil(positions / max_frames))
    stops = list(range(0, positions, step))
    if stops[-1] != positions - 1:
        stops.append(positions - 1)
    frames = []
    kh, kw = e.kernel.shape[1:]
    for k in stops:
        i, j = divmod(k, wo)
        canvas = Image.new("RGB", (width, height), "white")
        canvas.paste(Image.fromarray(left_img), (0, 0))
        filled = np.full((ho * cell, wo * cell, 3), 200, np.uint8)  # not computed yet
        mask = (np.arange(positions) <= k).reshape(ho, wo)
        big_mask = _upscale(mask, cell)
        filled[big_mask] = out_rgb[big_mask]
        x_out = wp * cell + gap
        canvas.paste(Image.fromarray(filled), (x_out, 0))
        draw = ImageDraw.Draw(canvas)
        if any(e.pad):  # the image inside the padding
            draw.rectangle([left * cell, top * cell, (left + w) * cell - 1, (top + h) * cell - 1], outline=(136, 136, 136))
        r0, c0 = i * e.stride[0], j * e.stride[1]
        r1, c1 = r0 + (kh - 1) * e.dilation[0], c0 + (kw - 1) * e.dilation[1]
        draw.rectangle([c0 * cell, r0 * cell, (c1 + 1) * cell - 1, (r1 + 1) * cell - 1], outline=(230, 159, 0), width=2)
        if e.dilation != (1, 1):
            for a in range(kh):
                for b in range(kw):
                    y, x = (r0 + a * e.dilation[0]) * cell + cell // 2, (c0 + b * e.dilation[1]) * cell + cell // 2
                    draw.rectangle([x - 1, y - 1, x + 1, y + 1], fill=(230, 159, 0))
        draw.rectangle([x_out + j * cell, i * cell, x_out + (j + 1) * cell - 1, (i + 1) * cell - 1], outline=(230, 159, 0), width=2)
        draw.text((2, max(hp, ho) * cell + 4), f"out[{i}, {j}] = {e.output[i, j]:.3g}", fill="black", font=font)
        setup = f"{kh}x{kw} kernel, {_setup_words(e)}".replace("×", "x").replace("°", " deg")
        draw.text((2, max(hp, ho) * cell + 18), setup[:90], fill=(80, 80, 80), font=font)
        frames.append(canvas.convert("P", palette=Image.Palette.ADAPTIVE, colors=64))
    buf = io.BytesIO()
    durations = [frame_ms] * (len(frames) - 1) + [max(frame_ms, 1500)]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=False)
    title = "The kernel sliding over the input" + (f": {label}" if label else "")
    per = f", {step} positions per frame" if step > 1 else ""
    caption = (
        f"{title}. A {kh}×{kw} kernel ({_setup_words(e)}) visits the {ho}×{wo} output positions in "
        f"reading order ({len(frames)} frames{per}); each stop adds its products' sum to the map on "
        f"the right. Output values range from {fmt(float(e.output.min()))} to {fmt(float(e.output.max()))}."
    )
    alt = (
        f"Animation of {len(frames)} frames. Left: the {h}×{w} input"
        f"{f' (mean of {n_ch} channels)' if n_ch > 1 else ''} padded to {hp}×{wp}, with an orange box "
        f"marking the kernel window. Right: the {ho}×{wo} output map filling in row by row as the box "
        f"moves, the current cell outlined."
    )
    return Animation(buf.getvalue(), len(frames), caption, alt, title=title,
                     data={"stops": stops, "step": step, "cell": cell, "size": (width, height)})


# ---------------------------------------------------------- hyperparameter panel
def _setting_words(s: Mapping[str, Any]) -> str:
    parts = []
    for key, short in (("stride", "stride"), ("padding", "pad"), ("dilation", "dil")):
        if key in s:
            v = s[key]
            parts.append(f"{short} {v if isinstance(v, (int, str)) else '×'.join(str(x) for x in v)}")
    if s.get("padding_mode", "zeros") != "zeros":
        parts.append(str(s["padding_mode"]))
    return ", ".join(parts) or "defaults"


def hyperparameter_panel(
    image: np.ndarray,
    maps: Sequence[np.ndarray],
    settings: Sequence[Mapping[str, Any]],
    *,
    kernel_size: Sequence[int],
    palette: PaletteName = "default",
    label: str = "",
    pixel: float = 0.07,
) -> Explained:
    """The input beside ``maps[i]``, the map a ``kernel_size`` kernel made from it under
    ``settings[i]`` (``stride``, ``padding``, ``dilation``, ``padding_mode``, as for
    :func:`convlens.conv.conv2d`; see :func:`convlens.views.conv_panel`).

    Every map is drawn at its true size: one input pixel and one output value take the
    same ``pixel`` inches, so the shrinking from stride and dilation and the growth from
    padding are visible.
    """
    pal = get_palette(palette)
    x = np.asarray(image, dtype=np.float64)
    x = x[None] if x.ndim == 2 else x
    if not settings:
        raise ConfigError("hyperparameter_panel needs at least one setting")
    if len(maps) != len(settings):
        raise ConfigError(f"{len(maps)} maps for {len(settings)} settings; give one map per setting")
    maps = [np.asarray(m, dtype=np.float64) for m in maps]
    shapes = [m.shape for m in maps]
    h, w = x.shape[1:]
    panels = [("input", x.mean(axis=0), (h, w))] + [(_setting_words(s), m, m.shape) for s, m in zip(settings, maps, strict=True)]
    gap, margin, title_h = 0.35, 0.2, 0.55
    widths = [p[2][1] * pixel for p in panels]
    heights = [p[2][0] * pixel for p in panels]
    fig_w = margin * 2 + sum(widths) + gap * (len(panels) - 1)
    fig_h = max(heights) + title_h + 0.5
    fig = new_figure(fig_w, fig_h)
    fig.set_layout_engine("none")
    vmax = float(np.abs(np.concatenate([m.ravel() for m in maps])).max()) or 1.0
    norm = Normalize(-vmax, vmax)
    x0 = margin
    axes_inches = []
    for (name, values, (ph, pw)), aw, ah in zip(panels, widths, heights, strict=True):
        ax = fig.add_axes((x0 / fig_w, (fig_h - title_h - ah) / fig_h, aw / fig_w, ah / fig_h))
        if name == "input":
            ax.imshow(values, cmap=pal.image, interpolation="nearest", aspect="auto")
        else:
            ax.imshow(values, cmap=pal.diverging, norm=norm, interpolation="nearest", aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{name}\n{ph}×{pw}", fontsize=7)
        axes_inches.append((aw, ah))
        x0 += aw + gap
    title = "One kernel, several hyperparameters" + (f": {label}" if label else "")
    fig.suptitle(title, fontsize=9, y=0.99)
    kh, kw = (int(v) for v in kernel_size)
    sizes = listing([f"{_setting_words(s)} → {m.shape[0]}×{m.shape[1]}" for s, m in zip(settings, maps, strict=True)])
    caption = (
        f"{title}. The {h}×{w} input and the maps a {kh}×{kw} kernel makes from it, all at the same "
        f"scale (one pixel = one value): {sizes}. Colours share one scale symmetric around zero "
        f"({fmt(-vmax)} to {fmt(vmax)})."
    )
    biggest = max(range(len(maps)), key=lambda n: maps[n].size)
    smallest = min(range(len(maps)), key=lambda n: maps[n].size)
    alt = (
        f"A row of {len(panels)} images drawn to scale: the {h}×{w} input, then {len(maps)} feature maps. "
        f"The largest map ({maps[biggest].shape[0]}×{maps[biggest].shape[1]}) comes from "
        f"{_setting_words(settings[biggest])}, the smallest ({maps[smallest].shape[0]}×{maps[smallest].shape[1]}) "
        f"from {_setting_words(settings[smallest])}."
    )
    return Explained(fig, caption, alt, title=title, data={
        "maps": maps, "shapes": shapes, "settings": [dict(s) for s in settings], "axes_inches": axes_inches,
        "pixel": pixel,
    })


# ----------------------------------------------------------------- kernel figure
def kernel_figure(
    image: np.ndarray,
    kernels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    stride: object = 1,
    padding: object = "same",
    dilation: object = 1,
    palette: PaletteName = "default",
    label: str = "input",
) -> Explained:
    """``image`` and, per kernel ``(name, weight, map)``, its weights and the map it made
    (see :func:`convlens.views.conv_apply`, which computes them).

    ``weight`` is kh×kw (a classic kernel, applied to the channel mean) or C×kh×kw (a
    learned filter, drawn summed over its channels); ``stride``, ``padding`` and
    ``dilation`` are named in the caption. Top row: the input, then one map per kernel;
    bottom row: the kernel under its map.
    """
    if not kernels:
        raise ConfigError("kernel_figure needs at least one kernel")
    pal = get_palette(palette)
    x = np.asarray(image, dtype=np.float64)
    x = x[None] if x.ndim == 2 else x
    maps = [np.asarray(m, dtype=np.float64) for _, _, m in kernels]
    n = len(kernels)
    fig = new_figure(1.9 * (n + 1) + 0.4, 4.0)
    axes = fig.subplots(2, n + 1, gridspec_kw={"height_ratios": [2.2, 1]}, squeeze=False)
    axes[0, 0].imshow(x.mean(axis=0), cmap=pal.image, interpolation="nearest")
    axes[0, 0].set_title(f"{label}\n{x.shape[1]}×{x.shape[2]}" + (f", mean of {x.shape[0]} ch." if x.shape[0] > 1 else ""), fontsize=7)
    axes[1, 0].set_visible(False)
    described = []
    for k, ((name, weight, _), m) in enumerate(zip(kernels, maps, strict=True), start=1):
        w = np.asarray(weight, dtype=np.float64)
        shown_w = w if w.ndim == 2 else w.sum(axis=0)
        norm = _symmetric(m)
        axes[0, k].imshow(m, cmap=pal.diverging, norm=norm, interpolation="nearest")
        axes[0, k].set_title(f"{name}\n{m.shape[0]}×{m.shape[1]}, {fmt(float(m.min()))}..{fmt(float(m.max()))}", fontsize=7)
        wn = _symmetric(shown_w)
        axes[1, k].imshow(shown_w, cmap=pal.diverging, norm=wn, interpolation="nearest")
        _annotate(axes[1, k], shown_w, wn, limit=9)
        summed = w.ndim == 3 and w.shape[0] > 1
        axes[1, k].set_title(f"{shown_w.shape[0]}×{shown_w.shape[1]}" + (f", Σ over {w.shape[0]} ch." if summed else ""), fontsize=6)
        peak = np.unravel_index(int(np.argmax(np.abs(m))), m.shape)
        described.append(f"{name} ({orientation(shown_w)}; strongest response {fmt(float(m[peak]))} at {tuple(int(v) for v in peak)})")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    names = listing([k[0] for k in kernels])
    title = f"{names} applied to {label}"
    fig.suptitle(title, fontsize=9)
    out_h, out_w = maps[0].shape
    caption = (
        f"{title}: the input, then the map each kernel makes ({out_h}×{out_w}; stride {stride}, padding "
        f"{padding}, dilation {dilation}), with the kernel's weights below it. Map colours are "
        f"symmetric around zero per map; red is a positive response, blue negative."
    )
    alt = (
        f"Input image {x.shape[1]}×{x.shape[2]} pixels and {n} feature map{'s' * (n != 1)}: "
        f"{listing(described)}."
    )
    return Explained(fig, caption, alt, title=title, data={"maps": maps, "names": [k[0] for k in kernels]})
