"""Figures of the background audit: the variants with their accuracies, the background
share of the attribution mass per class, and the channels that fire on the background.
They draw the arrays they are given (:func:`convlens.views.audit_view` computes them with
:func:`convlens.diagnose.audit`); captions and alt texts come from the same numbers.
Colours are Okabe–Ito (or gray), images are drawn on their 0..255 scale, not stretched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from convlens.errors import ConfigError
from convlens.viz.figure import Explained, new_figure
from convlens.viz.palettes import OKABE_ITO, PaletteName

__all__ = ["audit_variants_figure", "background_channels_figure", "background_mass_figure"]


def _colours(palette: PaletteName) -> tuple[str, str, str]:
    return (OKABE_ITO[4], OKABE_ITO[5], OKABE_ITO[1]) if palette != "gray" else ("0.25", "0.6", "0.8")


def _pixels(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A uint8 ``C×H×W`` image as matplotlib draws it, on the fixed 0..255 scale."""
    img = np.asarray(image, dtype=np.float64) / 255.0
    if img.ndim == 3 and img.shape[0] == 1:
        return img[0], "gray"
    if img.ndim == 3 and img.shape[0] == 3:
        return img.transpose(1, 2, 0), None
    raise ConfigError(f"an audit image must be 1×H×W or 3×H×W, got shape {np.asarray(image).shape}")


def audit_variants_figure(images: Mapping[str, np.ndarray], accuracy: Mapping[str, float], *, chance: float,
                          labels: Sequence[str], n_images: int, bg_gap: float,
                          palette: PaletteName = "default") -> Explained:
    """Left: the example images (columns) in every variant (rows); right: each variant's accuracy.

    ``images`` maps a variant name to uint8 ``(k, C, H, W)`` pixels (the same ``k`` images
    in every variant, ``labels[i]`` naming image ``i``), ``accuracy`` the same names to
    accuracies over ``n_images``.
    """
    names = list(images)
    if not names or list(accuracy) != names:
        raise ConfigError("the variants figure needs the same variants in images and accuracy, at least one")
    k = len(images[names[0]])
    if k == 0 or any(len(images[v]) != k for v in names) or len(labels) != k:
        raise ConfigError(f"every variant needs the same {k} example images and one label each")
    bar, _, light = _colours(palette)
    fig = new_figure(1.2 + 0.75 * k + 3.2, 0.5 + 0.75 * len(names))
    subs = np.asarray(fig.subfigures(1, 2, width_ratios=[0.75 * k + 1.2, 3.2])).ravel()
    left, right = subs[0], subs[1]
    axes = left.subplots(len(names), k, squeeze=False)
    for r, v in enumerate(names):
        for c in range(k):
            ax = axes[r, c]
            shown, cmap = _pixels(images[v][c])
            ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(labels[c], fontsize=6)
            if c == 0:
                ax.set_ylabel(v, fontsize=6, rotation=0, ha="right", va="center")
    ax = right.subplots()
    acc = np.array([accuracy[v] * 100 for v in names])
    ax.barh(range(len(names)), acc, color=bar)
    ax.axvline(chance * 100, color=light, linestyle="--", linewidth=1, label=f"chance {chance:.0%}")
    for i, a in enumerate(acc):
        ax.text(min(a + 1, 88), i, f"{a:.1f}%", va="center", fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)", fontsize=7)
    ax.legend(fontsize=6, loc="lower right")
    title = f"audit variants: BG-Gap {bg_gap * 100:.1f} pp"
    fig.suptitle(title, fontsize=9)
    best = max(names, key=lambda v: accuracy[v])
    worst = min(names, key=lambda v: accuracy[v])
    caption = (f"{k} test images in {len(names)} variants (rows: {', '.join(names)}) and the model's accuracy on each "
               f"variant of all {n_images:,} images; the dashed line is chance ({chance:.0%}). BG-Gap = mixed-same − "
               f"mixed-rand = {bg_gap * 100:.1f} percentage points.")
    alt = (f"Image grid of {len(names)} rows by {k} columns beside a bar chart. Accuracy: "
           + ", ".join(f"{v} {accuracy[v]:.1%}" for v in names)
           + f". Highest on {best}, lowest on {worst}; chance {chance:.0%}.")
    return Explained(fig, caption, alt, title=title,
                     data={"variants": names, "accuracy": acc / 100, "chance": chance, "labels": list(labels)})


def background_mass_figure(cam: np.ndarray, gradient: np.ndarray, classes: Sequence[str], *, cam_overall: float,
                           gradient_overall: float, area: float, method: str,
                           palette: PaletteName = "default") -> Explained:
    """Per true class: the share of the CAM mass and of the input-gradient mass on the background.

    ``area`` (the background's share of the image) is drawn as a dashed line: what a map
    spread evenly over the image would put on the background.
    """
    cam, gradient = np.asarray(cam, dtype=np.float64), np.asarray(gradient, dtype=np.float64)
    if cam.shape != (len(classes),) or gradient.shape != (len(classes),):
        raise ConfigError(f"background mass needs one value per class ({len(classes)}), got {cam.shape} and {gradient.shape}")
    one, two, light = _colours(palette)
    fig = new_figure(max(4.0, 0.5 * len(classes) + 1.6), 2.8)
    ax = fig.subplots()
    pos = np.arange(len(classes))
    ax.bar(pos - 0.2, np.nan_to_num(cam) * 100, 0.4, color=one, label=f"{method} ({cam_overall:.0%} overall)")
    ax.bar(pos + 0.2, np.nan_to_num(gradient) * 100, 0.4, color=two, hatch="//",
           label=f"input gradient ({gradient_overall:.0%} overall)")
    for i in np.flatnonzero(~np.isfinite(cam)):
        ax.text(i - 0.2, 1, "n/a", ha="center", va="bottom", fontsize=5, rotation=90)
    ax.axhline(area * 100, color=light, linestyle="--", linewidth=1, label=f"background area {area:.0%}")
    ax.set_xticks(pos, list(classes), fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("mass on the background (%)", fontsize=7)
    ax.legend(fontsize=6, loc="upper right")
    title = "attribution mass on the background, per class"
    ax.set_title(title, fontsize=9)
    top = int(np.nanargmax(cam)) if np.isfinite(cam).any() else 0
    caption = (f"Share of the positive {method} mass and of the input-gradient mass that falls outside the foreground "
               f"mask, summed over the images of each true class (overall {cam_overall:.1%} and "
               f"{gradient_overall:.1%}); the dashed line is the background's share of the image ({area:.1%}).")
    missing = [classes[int(i)] for i in np.flatnonzero(~np.isfinite(cam))]
    if missing:
        caption += f" n/a: no positive {method} value on any image of class {', '.join(missing)}."
    rng = (f"ranges from {np.nanmin(cam):.0%} to {np.nanmax(cam):.0%} (highest for class {classes[top]})"
           if np.isfinite(cam).any() else "is undefined for every class")
    alt = (f"Grouped bar chart over {len(classes)} classes. {method} mass on the background {rng}; input-gradient "
           f"mass from {np.nanmin(gradient):.0%} to {np.nanmax(gradient):.0%}.")
    return Explained(fig, caption, alt, title=title,
                     data={"cam": cam, "gradient": gradient, "classes": list(classes), "area": area})


def background_channels_figure(layers: Sequence[str], shares: Sequence[np.ndarray], areas: Sequence[float],
                               driven: Sequence[Sequence[int]], *, limit: float = 0.5,
                               palette: PaletteName = "default") -> Explained:
    """Per layer: every channel's share of its activation energy on the background, the
    background-driven channels highlighted; the dashed line is the bar a channel must pass."""
    if not layers or not (len(layers) == len(shares) == len(areas) == len(driven)):
        raise ConfigError("the channels figure needs at least one layer, with shares, area and channels for each")
    normal, hot, light = _colours(palette)
    fig = new_figure(max(4.5, 0.12 * max(len(s) for s in shares) + 1.5), 0.4 + 2.0 * len(layers))
    axes = fig.subplots(len(layers), 1, squeeze=False)[:, 0]
    phrases = []
    for ax, layer, share, area, hot_channels in zip(axes, layers, shares, areas, driven, strict=True):
        s = np.asarray(share, dtype=np.float64)
        bar = max(limit, area)
        colours = [hot if c in set(hot_channels) else normal for c in range(len(s))]
        ax.bar(range(len(s)), s * 100, color=colours)
        ax.axhline(bar * 100, color=light, linestyle="--", linewidth=1)
        ax.set_ylim(0, 100)
        ax.set_xlim(-0.8, len(s) - 0.2)
        ax.set_ylabel("energy on background (%)", fontsize=6)
        ax.set_title(f"{layer}: {len(hot_channels)} of {len(s)} channels background-driven", fontsize=8)
        ax.tick_params(labelsize=6)
        named = ", ".join(str(c) for c in list(hot_channels)[:8]) + (" ..." if len(hot_channels) > 8 else "")
        phrases.append(f"{layer}: {len(hot_channels)} of {len(s)} channels above {bar:.0%}"
                       + (f" (channels {named})" if hot_channels else "") + f", median share {np.median(s):.0%}")
    axes[-1].set_xlabel("channel", fontsize=7)
    title = "background-driven channels"
    fig.suptitle(title, fontsize=9)
    n_hot = sum(len(d) for d in driven)
    caption = (f"For each channel of {', '.join(layers)}: the share of its activation energy (squared change from its "
               f"response to an empty image) that lies on the background. Highlighted: the {n_hot} channels with more "
               "than half of it there and more than the background's share of the map (dashed line).")
    alt = "Bar charts, one per layer. " + "; ".join(phrases) + "."
    return Explained(fig, caption, alt, title=title,
                     data={"layers": list(layers), "shares": [np.asarray(s) for s in shares], "areas": list(areas),
                           "driven": [list(d) for d in driven]})
