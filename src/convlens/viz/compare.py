"""Figures that compare two models: the CKA heatmap, matched filters, per-class accuracy
difference and the disagreement gallery. They draw arrays they are given
(:mod:`convlens.views` computes them with :mod:`convlens.compare`); captions and alt texts
come from the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import Normalize

from convlens.errors import ConfigError
from convlens.viz.describe import fmt, listing
from convlens.viz.figure import Explained, new_figure
from convlens.viz.palettes import OKABE_ITO, PaletteName
from convlens.viz.palettes import palette as get_palette

__all__ = ["accuracy_difference_figure", "cka_figure", "disagreement_gallery", "matched_filters_figure"]


def cka_figure(matrix: np.ndarray, layers_a: Sequence[str], layers_b: Sequence[str], *, estimator: str,
               kernel: str = "linear", n_inputs: int = 0, name_a: str = "A", name_b: str = "B",
               stderr: np.ndarray | None = None, palette: PaletteName = "default") -> Explained:
    """The CKA matrix (rows: layers of A, columns: layers of B) with every value printed."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (len(layers_a), len(layers_b)):
        raise ConfigError(f"a CKA matrix of shape {m.shape} does not fit {len(layers_a)} × {len(layers_b)} layers")
    pal = get_palette(palette)
    fig = new_figure(1.6 + 0.75 * len(layers_b), 1.3 + 0.55 * len(layers_a))
    ax = fig.subplots()
    shown = ax.imshow(m, cmap=pal.sequential, norm=Normalize(0, 1), interpolation="nearest")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            text = f"{m[i, j]:.2f}" + (f"\n±{stderr[i, j]:.2f}" if stderr is not None else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="black" if m[i, j] > 0.55 else "white")
    ax.set_xticks(range(len(layers_b)), list(layers_b), rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(layers_a)), list(layers_a), fontsize=7)
    ax.set_xlabel(f"layers of {name_b}", fontsize=8)
    ax.set_ylabel(f"layers of {name_a}", fontsize=8)
    fig.colorbar(shown, ax=ax, shrink=0.8, label="CKA (similarity)")
    title = f"{kernel} CKA ({estimator}) between {name_a} and {name_b}"
    ax.set_title(title, fontsize=9)
    best = [layers_b[int(np.argmax(row))] for row in m]
    hi = tuple(int(i) for i in np.unravel_index(int(np.argmax(m)), m.shape))
    caption = (f"{kernel.capitalize()} CKA ({estimator} estimator) between {len(layers_a)} layers of {name_a} (rows) "
               f"and {len(layers_b)} layers of {name_b} (columns) over {n_inputs:,} inputs; 1 means the same "
               "representation up to rotation and scale, 0 unrelated.")
    alt = (f"Heatmap of {m.size} CKA values from {fmt(float(m.min()))} to {fmt(float(m.max()))}. The most similar pair "
           f"is {layers_a[hi[0]]} and {layers_b[hi[1]]} ({m[hi]:.2f}). For each layer of {name_a}, the most similar "
           f"layer of {name_b}: " + listing([f"{a} → {b}" for a, b in zip(layers_a, best, strict=True)]) + ".")
    return Explained(fig, caption, alt, title=title,
                     data={"matrix": m, "layers_a": list(layers_a), "layers_b": list(layers_b), "best": best})


def matched_filters_figure(weights_a: np.ndarray, weights_b: np.ndarray, a_channels: Sequence[int],
                           b_channels: Sequence[int], correlations: Sequence[float], *, layer_a: str, layer_b: str,
                           threshold: float, max_pairs: int = 16, palette: PaletteName = "default") -> Explained:
    """Matched filters side by side: A's channel above B's, best-correlated pair first.

    ``weights_*`` are (out, in, kh, kw); a filter is drawn as its mean over input channels
    on a diverging scale shared by each pair.
    """
    wa, wb = np.asarray(weights_a, dtype=np.float64), np.asarray(weights_b, dtype=np.float64)
    pal = get_palette(palette)
    k = min(max_pairs, len(a_channels))
    if k == 0:
        raise ConfigError("no matched pairs to draw")
    fig = new_figure(1.0 + 0.8 * k, 2.4)
    axes = fig.subplots(2, k, squeeze=False)
    for c in range(k):
        fa, fb = wa[a_channels[c]].mean(axis=0), wb[b_channels[c]].mean(axis=0)
        lim = float(max(np.abs(fa).max(), np.abs(fb).max())) or 1.0
        for r, (f, ch) in enumerate(((fa, a_channels[c]), (fb, b_channels[c]))):
            ax = axes[r, c]
            ax.imshow(f, cmap=pal.diverging, vmin=-lim, vmax=lim, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{'AB'[r]} {ch}", fontsize=6, labelpad=1)
        axes[0, c].set_title(f"r={correlations[c]:.2f}" + ("" if correlations[c] > threshold else "*"), fontsize=6)
    title = f"matched filters: {layer_a} of A ↔ {layer_b} of B"
    fig.suptitle(title, fontsize=9)
    corr = np.asarray(correlations[:k], dtype=np.float64)
    below = int((corr <= threshold).sum())
    caption = (f"The {k} best-matched filter pairs of {layer_a} (A, top row) and {layer_b} (B, bottom row), matched "
               f"one to one by the correlation r of their activations (red positive, blue negative weights)."
               + (f" * marks {below} pairs not above the shuffled-image null ({threshold:.2f})." if below else
                  f" Every pair shown is above the shuffled-image null ({threshold:.2f})."))
    alt = (f"Two rows of {k} small filter images. Correlations of the pairs run from {fmt(float(corr.max()))} down to "
           f"{fmt(float(corr.min()))}; pairs: " + listing([f"A {a} with B {b}" for a, b in
                                                          zip(a_channels[:k], b_channels[:k], strict=True)]) + ".")
    return Explained(fig, caption, alt, title=title,
                     data={"a_channels": list(a_channels[:k]), "b_channels": list(b_channels[:k]), "correlations": corr})


def accuracy_difference_figure(per_class_a: np.ndarray, per_class_b: np.ndarray, classes: Sequence[str], *,
                               accuracy_a: float, accuracy_b: float, p_value: float, name_a: str = "A",
                               name_b: str = "B", palette: PaletteName = "default") -> Explained:
    """Per class: accuracy of B minus accuracy of A, in percentage points."""
    a, b = np.asarray(per_class_a, dtype=np.float64), np.asarray(per_class_b, dtype=np.float64)
    diff = (b - a) * 100
    colours = (OKABE_ITO[4], OKABE_ITO[5]) if palette != "gray" else ("0.3", "0.7")
    fig = new_figure(max(4.0, 0.45 * len(classes) + 1.5), 2.8)
    ax = fig.subplots()
    ax.bar(range(len(classes)), np.nan_to_num(diff), color=[colours[0] if d >= 0 else colours[1] for d in diff],
           hatch=None)
    for i, d in enumerate(diff):
        if not np.isnan(d):
            ax.text(i, d, f"{d:+.1f}", ha="center", va="bottom" if d >= 0 else "top", fontsize=6)
    ax.axhline(0, color="0.2", linewidth=0.6)
    ax.set_xticks(range(len(classes)), list(classes), fontsize=7)
    ax.set_ylabel(f"accuracy {name_b} − {name_a} (points)", fontsize=7)
    title = f"per-class accuracy: {name_b} − {name_a}"
    ax.set_title(title, fontsize=9)
    best, worst = int(np.nanargmax(diff)), int(np.nanargmin(diff))
    caption = (f"Per-class accuracy of {name_b} minus {name_a} in percentage points (overall {accuracy_a:.2%} for "
               f"{name_a}, {accuracy_b:.2%} for {name_b}; McNemar exact p = {p_value:.3g}).")
    alt = (f"Bar chart over {len(classes)} classes. {name_b} gains most on class {classes[best]} ({diff[best]:+.1f} "
           f"points) and loses most on class {classes[worst]} ({diff[worst]:+.1f} points).")
    return Explained(fig, caption, alt, title=title, data={"difference": diff, "classes": list(classes)})


def disagreement_gallery(images: Sequence[np.ndarray], heats_a: Sequence[np.ndarray], heats_b: Sequence[np.ndarray],
                         labels: Sequence[str], *, method: str, name_a: str = "A", name_b: str = "B",
                         n_total: int = 0, palette: PaletteName = "default", alpha: float = 0.5) -> Explained:
    """One row per input on which the models disagree: the input, A's map, B's map.

    ``heats_*`` are normalised maps in [0, 1] at the input's size; ``labels`` holds one
    ``(true, A's prediction, B's prediction)`` phrase per row.
    """
    from convlens.viz.explain import _display, _overlay, where

    if not images:
        raise ConfigError("the models agree on every input: no disagreement to draw")
    pal = get_palette(palette)
    rows = len(images)
    fig = new_figure(4.4, 0.4 + 1.35 * rows)
    axes = fig.subplots(rows, 3, squeeze=False)
    phrases = []
    for r in range(rows):
        disp, cmap = _display(images[r])
        axes[r, 0].imshow(disp, cmap=cmap, interpolation="nearest")
        axes[r, 0].set_title(labels[r], fontsize=6)
        for c, heat in ((1, heats_a[r]), (2, heats_b[r])):
            _overlay(axes[r, c], images[r], np.asarray(heat, dtype=np.float64), pal.sequential, alpha)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        phrases.append(f"{labels[r]}: {name_a}'s map {where(heats_a[r]).region}, {name_b}'s {where(heats_b[r]).region}")
    axes[0, 1].set_xlabel(name_a, fontsize=7)
    axes[0, 2].set_xlabel(name_b, fontsize=7)
    title = f"where {name_a} and {name_b} disagree ({method})"
    fig.suptitle(title, fontsize=9)
    caption = (f"{rows} of the {n_total:,} inputs on which {name_a} and {name_b} predict different classes: the input, "
               f"then {method} of each model for its own prediction (middle: {name_a}, right: {name_b}).")
    alt = f"Gallery of {rows} rows. " + "; ".join(phrases) + "."
    return Explained(fig, caption, alt, title=title, data={"labels": list(labels), "heats_a": list(heats_a),
                                                          "heats_b": list(heats_b)})
