"""Heatmaps that explain themselves: overlays, method comparisons, faithfulness curves.

The figures take plain arrays (an image, normalised maps in [0, 1], probabilities);
:func:`convlens.views.cam_view` and :func:`convlens.views.compare_view` compute them with
:mod:`convlens.explain` for one input. Captions and alt texts say where a map concentrates
(:func:`where`), e.g. "Grad-CAM for class 7 (p = 0.98) at conv2 concentrates in the upper
half; 80% of its mass lies on the digit's strokes".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from convlens.errors import ConfigError
from convlens.viz.describe import colour_name, fmt, listing, mean_colour
from convlens.viz.figure import Explained, new_figure
from convlens.viz.palettes import OKABE_ITO, PaletteName
from convlens.viz.palettes import palette as get_palette

# --- words from a heatmap -----------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a heatmap's mass lies (see :func:`where`)."""

    region: str  # "the upper half", "the lower-left quarter", "the centre", "the whole image"
    peak: tuple[int, int]  # (row, column) of the maximum
    centroid: tuple[float, float]  # (row, column) of the centre of mass
    top_fraction: float  # share of the mass in the upper half
    left_fraction: float  # share of the mass in the left half
    on_strokes: float | None  # share of the mass on the bright pixels (grayscale inputs)
    strokes_area: float | None  # share of the image those pixels cover
    empty: bool = False  # the map is zero everywhere

    def phrase(self, strokes: str = "the bright strokes") -> str:
        """``"concentrates in the upper half; 80% of its mass lies on the bright strokes"``."""
        if self.empty:
            return "is zero everywhere: no region supports this target at this layer"
        words = "spreads over the whole image" if self.region == "the whole image" else f"concentrates in {self.region}"
        if self.on_strokes is not None:
            words += f"; {self.on_strokes:.0%} of its mass lies on {strokes}"
        return words


def where(heat: np.ndarray, image: np.ndarray | None = None, *, dominant: float = 0.65) -> Where:
    """Describe where the non-negative map ``heat`` (H, W) puts its mass.

    A half holding at least ``dominant`` of the mass names the region ("the upper half");
    if a vertical and a horizontal half both do, the quarter ("the upper-left quarter");
    otherwise the centre if the central box (half the height and width) holds at least
    half of the mass, else "the whole image". For a grayscale ``image`` (H, W or 1×H×W),
    ``on_strokes`` is the share of the mass on pixels brighter than half the image's range.
    """
    h = np.clip(np.asarray(heat, dtype=np.float64), 0, None)
    if h.ndim != 2:
        raise ConfigError(f"a heatmap must be H×W, got shape {h.shape}")
    rows, cols = h.shape
    total = float(h.sum())
    peak = np.unravel_index(int(np.argmax(h)), h.shape)
    if total <= 0:
        return Where("the whole image", (int(peak[0]), int(peak[1])), ((rows - 1) / 2, (cols - 1) / 2),
                     0.5, 0.5, None, None, empty=True)
    mass = h / total
    r = np.arange(rows)[:, None] + 0.5  # pixel centres
    c = np.arange(cols)[None, :] + 0.5
    top = float((mass * np.clip(rows / 2 - (r - 0.5), 0, 1)).sum())  # a middle row counts half
    left = float((mass * np.clip(cols / 2 - (c - 0.5), 0, 1)).sum())
    vertical = "upper" if top >= dominant else "lower" if 1 - top >= dominant else None
    horizontal = "left" if left >= dominant else "right" if 1 - left >= dominant else None
    central = float(mass[rows // 4: rows - rows // 4, cols // 4: cols - cols // 4].sum())
    if vertical and horizontal:
        region = f"the {vertical}-{horizontal} quarter"
    elif vertical:
        region = f"the {vertical} half"
    elif horizontal:
        region = f"the {horizontal} half"
    elif central >= 0.5:
        region = "the centre"
    else:
        region = "the whole image"
    centroid = (float((mass * (r - 0.5)).sum()), float((mass * (c - 0.5)).sum()))
    on, area = None, None
    if image is not None:
        img = np.asarray(image, dtype=np.float64)
        if img.ndim == 3 and img.shape[0] == 1:
            img = img[0]
        if img.ndim == 2 and img.shape == h.shape and img.max() > img.min():
            fg = img > img.min() + 0.5 * (img.max() - img.min())
            if 0 < fg.mean() < 0.6:
                on, area = float(mass[fg].sum()), float(fg.mean())
    return Where(region, (int(peak[0]), int(peak[1])), centroid, top, left, on, area)


def _strokes_words(input_label: str) -> str:
    return "the digit's strokes" if " digit " in f" {input_label} " else "the bright strokes"


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    raw = np.asarray(image)
    img = raw.astype(np.float64)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim == 3 and img.shape[0] == 3:
        img = img.transpose(1, 2, 0)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ConfigError(f"input image must be H×W, 1×H×W or 3×H×W, got shape {np.asarray(image).shape}")
    if img.ndim == 3 and raw.dtype == np.uint8:  # colour pixels as they are, not stretched
        return img / 255.0, None
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / ((hi - lo) or 1.0)
    return img, ("gray" if img.ndim == 2 else None)


def _check_heat(heat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    h = np.asarray(heat, dtype=np.float64)
    if h.ndim != 2 or h.shape != tuple(shape[:2]):
        raise ConfigError(f"heatmap shape {h.shape} does not match the image's {tuple(shape[:2])}")
    if not np.isfinite(h).all():
        raise ConfigError("the heatmap contains NaN or infinite values")
    return h


def _overlay(ax: Any, image: np.ndarray, heat: np.ndarray, cmap: str, alpha: float) -> Any:
    disp, gray = _display(image)
    ax.imshow(disp, cmap=gray, interpolation="nearest", vmin=0, vmax=1)
    shown = ax.imshow(heat, cmap=cmap, alpha=alpha, norm=Normalize(0, 1), interpolation="bilinear")
    ax.set_axis_off()
    return shown


def _group_phrase(names: list[str], region: str, *, everyone: bool) -> str:
    """``"Grad-CAM and Score-CAM concentrate in the upper half"`` (``region`` "" = empty maps)."""
    who = ("All" if len(names) > 2 else "Both") if everyone else listing(names)
    plural = len(names) > 1
    if not region:
        return f"{who} {'are' if plural else 'is'} zero everywhere"
    if region == "the whole image":
        return f"{who} spread{'' if plural else 's'} over the whole image"
    return f"{who} concentrate{'' if plural else 's'} in {region}"


def _about(title: str, target: str, probability: float | None, layer: str | None) -> str:
    p = f" (p = {probability:.2f})" if probability is not None and np.isfinite(probability) else ""
    at = f" at {layer}" if layer else ""
    return f"{title} for {target}{p}{at}"


# --- one heatmap over its input -----------------------------------------------------------


def overlay_figure(
    image: np.ndarray,
    heat: np.ndarray,
    *,
    method: str,
    target: str,
    probability: float | None = None,
    layer: str | None = None,
    input_label: str = "the input",
    palette: PaletteName = "default",
    alpha: float = 0.5,
    colorbar: bool = True,
) -> Explained:
    """The input beside the heatmap ``heat`` (H, W, normalised to [0, 1]) drawn over it.

    ``image`` is the input as drawn (H×W, 1×H×W or 3×H×W, any range). ``method``,
    ``target`` (e.g. ``"class 7"``), ``probability`` and ``layer`` go into the title,
    caption and alt text; ``alpha`` is the heatmap's opacity.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha (the heatmap's opacity) must be between 0 and 1, got {alpha}")
    disp, _ = _display(image)
    h = _check_heat(heat, disp.shape)
    pal = get_palette(palette)
    fig = new_figure(5.6, 2.9)
    ax_in, ax_map = fig.subplots(1, 2)
    ax_in.imshow(disp, cmap=_display(image)[1], interpolation="nearest")
    ax_in.set_title(input_label, fontsize=8)
    ax_in.set_axis_off()
    shown = _overlay(ax_map, image, h, pal.sequential, alpha)
    about = _about(method, target, probability, layer)
    ax_map.set_title(about, fontsize=8)
    if colorbar:
        fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=pal.sequential), ax=ax_map, shrink=0.8,
                     fraction=0.05).set_label("relevance (normalised)", fontsize=7)
    w = where(h, image)
    strokes = _strokes_words(input_label)
    caption = f"{about} {w.phrase(strokes)}."
    rows, cols = h.shape
    colour = disp.ndim == 3
    seen = f"a colour image of {rows}×{cols} RGB pixels, mostly {mean_colour(disp.transpose(2, 0, 1))}" if colour \
        else f"{rows}×{cols} pixels"
    at_peak = f" (a {colour_name(disp[w.peak[0], w.peak[1]])} pixel)" if colour else ""
    alt = (
        f"Two panels. Left: {input_label}, {seen}. Right: the {method} heatmap for {target} drawn over "
        f"it at {alpha:.0%} opacity in {pal.sequential} ({'dark to bright' if pal.sequential == 'gray' else 'dark purple for low, yellow for high'} relevance). "
        + ("The map is zero everywhere." if w.empty else
           f"It peaks at row {w.peak[0]}, column {w.peak[1]}{at_peak}, and {w.phrase(strokes)}"
           + (f" (those pixels cover {w.strokes_area:.0%} of the image)." if w.strokes_area is not None else "."))
    )
    return Explained(fig, caption, alt, title=about,
                     data={"image": disp, "heat": h, "where": w, "overlay": shown, "alpha": alpha})


# --- several heatmaps side by side --------------------------------------------------------


def comparison_figure(
    image: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    *,
    target: str,
    probabilities: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    layer: str | None = None,
    input_label: str = "the input",
    palette: PaletteName = "default",
    alpha: float = 0.5,
) -> Explained:
    """The input, one heatmap per panel (``(title, heat)``, heat H×W in [0, 1]) and a bar
    chart of the predicted ``probabilities`` (K,), side by side.

    Panels may be methods for one target or one method for several targets (the titles say
    which); ``target`` names what they explain for the caption.
    """
    if not panels:
        raise ConfigError("a comparison needs at least one heatmap")
    disp, gray = _display(image)
    heats = [_check_heat(h, disp.shape) for _, h in panels]
    pal = get_palette(palette)
    n = len(panels)
    cols = min(n + 1, 5)
    grid_rows = -(-(n + 1) // cols)
    extra = probabilities is not None
    fig = new_figure(1.75 * cols + (2.2 if extra else 0) + 0.6, 1.95 * grid_rows + 0.4)
    gs = fig.add_gridspec(grid_rows, cols + (1 if extra else 0), width_ratios=[1] * cols + ([1.3] if extra else []))
    ax_in = fig.add_subplot(gs[0, 0])
    ax_in.imshow(disp, cmap=gray, interpolation="nearest")
    ax_in.set_title(input_label, fontsize=7)
    ax_in.set_axis_off()
    descriptions = []
    axes = []
    strokes = _strokes_words(input_label)
    for i, ((title, _), h) in enumerate(zip(panels, heats, strict=True), start=1):
        ax = fig.add_subplot(gs[i // cols, i % cols])
        axes.append(ax)
        _overlay(ax, image, h, pal.sequential, alpha)
        ax.set_title(title, fontsize=7)
        descriptions.append((title, where(h, image)))
    fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=pal.sequential), ax=axes, shrink=0.7,
                 fraction=0.03).set_label("relevance (normalised)", fontsize=7)
    probs = None
    if extra:
        probs = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        names = list(class_names) if class_names is not None else [str(i) for i in range(len(probs))]
        if len(names) != len(probs):
            raise ConfigError(f"{len(names)} class names for {len(probs)} probabilities")
        ax_p = fig.add_subplot(gs[:, -1])
        best = int(np.argmax(probs))
        colours = [OKABE_ITO[4] if i == best else "#BBBBBB" for i in range(len(probs))]
        ax_p.barh(range(len(probs)), probs, color=colours)
        ax_p.set_yticks(range(len(probs)), names, fontsize=6)
        ax_p.invert_yaxis()
        ax_p.set_xlim(0, 1)
        ax_p.set_xlabel("probability", fontsize=7)
        ax_p.tick_params(axis="x", labelsize=6)
        ax_p.set_title("prediction", fontsize=7)
    at = f" at {layer}" if layer else ""
    title = f"Explanations for {target}{at}"
    fig.suptitle(title, fontsize=9)
    groups: dict[str, list[str]] = {}
    for name, w in descriptions:
        groups.setdefault("" if w.empty else w.region, []).append(name)
    pred = ""
    if probs is not None:
        best = int(np.argmax(probs))
        pred = f" The model predicts {names[best]} (p = {probs[best]:.2f})."
    summary = "; ".join(_group_phrase(members, region, everyone=len(members) == n > 1)
                        for region, members in sorted(groups.items(), key=lambda kv: -len(kv[1])))
    caption = f"{n} heatmap{'s' * (n != 1)} for {target}{at} beside {input_label}.{pred} {summary}."
    alt = (
        f"{input_label[:1].upper()}{input_label[1:]}, then {n} heatmaps drawn over it at {alpha:.0%} opacity in "
        f"{pal.sequential}: " + "; ".join(f"{name} {w.phrase(strokes)}" for name, w in descriptions) + "."
        + (f" A bar chart gives the predicted probability of each class; the highest is {names[int(np.argmax(probs))]} "
           f"at {probs.max():.2f}." if probs is not None else "")
    )
    return Explained(fig, caption, alt, title=title,
                     data={"image": disp, "heats": heats, "titles": [t for t, _ in panels],
                           "where": dict(descriptions), "probabilities": probs})


# --- faithfulness curves ------------------------------------------------------------------


_MARKERS = ("o", "s", "^", "v", "D", "x", "+")
_LINESTYLES = ("-", "--", "-.", ":")
_GRAYS = ("#000000", "#595959", "#8c8c8c")


def curve_style(i: int, palette: PaletteName = "default") -> dict[str, str]:
    """Colour, line style and marker of the ``i``-th curve of a chart.

    Marker and line style alone tell the first 28 curves apart (seven markers, then the
    next line style), so the curves stay distinct in grayscale; the colour (Okabe–Ito, or
    three grays) is a third cue.

    >>> curve_style(0), curve_style(7, "gray")
    ({'color': '#E69F00', 'linestyle': '-', 'marker': 'o'}, {'color': '#595959', 'linestyle': '--', 'marker': 'o'})
    """
    colours = _GRAYS if palette == "gray" else OKABE_ITO
    return {"color": colours[i % len(colours)], "linestyle": _LINESTYLES[(i // len(_MARKERS)) % len(_LINESTYLES)],
            "marker": _MARKERS[i % len(_MARKERS)]}


def faithfulness_figure(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    *,
    n_images: int,
    palette: PaletteName = "default",
) -> Explained:
    """Mean deletion and insertion curves per method: ``curves[method]["deletion"]`` and
    ``["insertion"]`` are probabilities (T,) at the fractions ``["fractions"]`` (T,)."""
    if not curves:
        raise ConfigError("no curves to draw: compute faithfulness for at least one method")
    get_palette(palette)
    cols = 1 if len(curves) <= 4 else 2
    rows = -(-len(curves) // cols)
    fig = new_figure(7.2, 3.0 + 0.13 * rows)  # the legends sit below the plots, never on the curves
    axes = fig.subplots(1, 2, sharey=True)
    lines: dict[str, dict[str, float]] = {}
    for i, (name, c) in enumerate(curves.items()):
        style = curve_style(i, palette)
        for ax, kind in zip(axes, ("deletion", "insertion"), strict=True):
            f = np.asarray(c["fractions"], dtype=np.float64)
            y = np.asarray(c[kind], dtype=np.float64)
            auc = float(((y[1:] + y[:-1]) / 2 * np.diff(f)).sum())  # trapezoidal rule
            lines.setdefault(name, {})[kind] = auc
            ax.plot(f, y, **style, ms=3, markevery=max(1, len(f) // 6), lw=1.1, label=f"{name} (AUC {auc:.3f})")
    for ax, kind, better in zip(axes, ("deletion", "insertion"), ("lower is better", "higher is better"), strict=True):
        ax.set_title(f"{kind} ({better})", fontsize=8)
        ax.set_xlabel(f"fraction of pixels {'removed' if kind == 'deletion' else 'inserted'}", fontsize=7)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=cols, frameon=False)
        ax.tick_params(labelsize=6)
        ax.set_xlim(0, 1)
    axes[0].set_ylabel("probability of the target class", fontsize=7)
    title = f"Deletion and insertion curves, mean over {n_images} images"
    fig.suptitle(title, fontsize=9)
    best_del = min(lines, key=lambda k: lines[k]["deletion"])
    best_ins = max(lines, key=lambda k: lines[k]["insertion"])
    caption = (
        f"{title}: the probability of the target class as the most relevant pixels are removed (left) or "
        f"inserted into a blurred copy (right). {best_del} drops fastest (deletion AUC "
        f"{fmt(lines[best_del]['deletion'])}); {best_ins} recovers fastest (insertion AUC {fmt(lines[best_ins]['insertion'])})."
    )
    alt = "Two line charts. " + "; ".join(
        f"{name}: deletion AUC {fmt(v['deletion'])}, insertion AUC {fmt(v['insertion'])}" for name, v in lines.items()
    ) + "."
    return Explained(fig, caption, alt, title=title, data={"curves": curves, "auc": lines})
