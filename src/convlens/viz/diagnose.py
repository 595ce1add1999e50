"""Figures of a diagnosis: confusion matrix, reliability diagram, error gallery, confusion cells.

Each takes plain arrays and words (what :func:`convlens.views.diagnosis` hands over from a
:class:`convlens.diagnose.Diagnosis`) and returns an :class:`~convlens.viz.Explained`
whose caption and alt text are generated from those numbers. Colours are colour-blind
safe: the sequential palette for counts and maps, the diverging one (zero white) for the
signed CAM difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, TwoSlopeNorm

from convlens.errors import ConfigError
from convlens.viz.describe import listing
from convlens.viz.explain import _display, where
from convlens.viz.figure import Explained, new_figure
from convlens.viz.palettes import OKABE_ITO, PaletteName
from convlens.viz.palettes import palette as get_palette

#: The most rows the error gallery draws (one input per row).
MAX_GALLERY_ROWS = 48


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# --- confusion matrix -------------------------------------------------------------------------


def confusion_figure(confusion: np.ndarray, classes: Sequence[str], *, palette: PaletteName = "default",
                     title: str = "Confusion matrix") -> Explained:
    """Counts ``C × C`` (rows: true class, columns: predicted), each printed in its cell; the
    colour is the share of the row (the recall of the diagonal), so rare classes show too."""
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(classes):
        raise ConfigError(f"a confusion matrix must be C×C for {len(classes)} classes, got shape {cm.shape}")
    cm = cm.astype(np.int64)
    c = cm.shape[0]
    n = int(cm.sum())
    rows = cm.sum(1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    pal = get_palette(palette)
    size = max(3.6, 0.42 * c + 1.6)
    fig = new_figure(size + 0.8, size)
    ax = fig.subplots()
    shown = ax.imshow(share, cmap=pal.sequential, norm=Normalize(0, 1), interpolation="nearest")
    font = 8 if c <= 12 else 6 if c <= 20 else 0
    if font:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=font,
                        color="black" if share[i, j] > 0.5 else "white")
    ticks = range(c)
    ax.set_xticks(ticks, [str(k) for k in classes], fontsize=7, rotation=90 if c > 12 else 0)
    ax.set_yticks(ticks, [str(k) for k in classes], fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(shown, ax=ax, shrink=0.8, fraction=0.05).set_label("share of the true class", fontsize=7)
    correct = int(np.trace(cm))
    off = [(int(cm[i, j]), i, j) for i in range(c) for j in range(c) if i != j and cm[i, j] > 0]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    top = [f"{classes[i]} → {classes[j]} ({k})" for k, i, j in off[:3]]
    acc = correct / n if n else 0.0
    caption = (f"{title} of {n} inputs: {correct} correct ({_pct(acc)}); "
               + (f"most confused: {listing(top)}." if top else "no input is misclassified."))
    recalls = np.diag(share)
    worst = int(np.argmin(np.where(rows[:, 0] > 0, recalls, np.inf))) if n else 0
    alt = (f"A {c} by {c} grid; rows are the true classes and columns the predicted ones, {', '.join(map(str, classes[:12]))}"
           f"{' ...' if c > 12 else ''}. Each cell prints its count and is coloured by its share of the row "
           f"({pal.sequential}, dark for 0, bright for 1). The diagonal holds {correct} of {n} inputs; "
           f"the class recalled worst is {classes[worst]} ({_pct(float(recalls[worst]))}). "
           + (f"The largest off-diagonal cells: {listing(top)}." if top else "Every off-diagonal cell is 0."))
    return Explained(fig, caption, alt, title=title, data={"confusion": cm, "share": share, "image": shown})


# --- reliability diagram ----------------------------------------------------------------------


def reliability_figure(edges: np.ndarray, counts: np.ndarray, confidence: np.ndarray, accuracy: np.ndarray,
                       ece: float, *, palette: PaletteName = "default") -> Explained:
    """Accuracy per confidence bin against the diagonal of perfect calibration, with the
    number of inputs per bin below; ``ece`` goes into the title."""
    e = np.asarray(edges, dtype=np.float64)
    cnt = np.asarray(counts, dtype=np.int64)
    conf = np.asarray(confidence, dtype=np.float64)
    acc = np.asarray(accuracy, dtype=np.float64)
    b = e.size - 1
    if b < 1 or not (cnt.shape == conf.shape == acc.shape == (b,)):
        raise ConfigError(f"reliability data must give one count, confidence and accuracy per bin ({b}), got "
                          f"{cnt.shape}, {conf.shape}, {acc.shape}")
    pal = get_palette(palette)
    fig = new_figure(4.6, 5.0)
    ax, ax_n = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    centres = (e[:-1] + e[1:]) / 2
    width = np.diff(e)
    filled = cnt > 0
    colour = OKABE_ITO[4] if pal.name == "default" else "0.4"
    gap = OKABE_ITO[5] if pal.name == "default" else "0.75"
    ax.bar(centres[filled], acc[filled], width=width[filled] * 0.95, color=colour, label="accuracy")
    ax.bar(centres[filled], (conf - acc)[filled], bottom=acc[filled], width=width[filled] * 0.95, color=gap,
           alpha=0.45, hatch="//", label="gap to confidence")
    ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    title = f"Reliability diagram (ECE {ece:.4f}, {b} bins)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax_n.bar(centres, cnt, width=width * 0.95, color="0.5")
    ax_n.set_yscale("symlog")
    ax_n.set_xlabel("confidence (top-1 probability)")
    ax_n.set_ylabel("inputs")
    n = int(cnt.sum())
    with np.errstate(invalid="ignore"):
        over = float(np.sum(cnt[filled] * np.maximum(conf - acc, 0)[filled]) / max(n, 1))
        under = float(np.sum(cnt[filled] * np.maximum(acc - conf, 0)[filled]) / max(n, 1))
    busiest = int(np.argmax(cnt))
    lean = "over-confident" if over > under else "under-confident" if under > over else "calibrated"
    caption = (f"{title}: over {n} inputs the model is {lean} on balance (over-confidence {over:.4f}, "
               f"under-confidence {under:.4f}); {cnt[busiest]} inputs ({_pct(cnt[busiest] / max(n, 1))}) fall in "
               f"the bin ({e[busiest]:.2f}, {e[busiest + 1]:.2f}].")
    rows = "; ".join(f"({e[i]:.2f}, {e[i + 1]:.2f}]: {cnt[i]} inputs, confidence {conf[i]:.3f}, accuracy {acc[i]:.3f}"
                     for i in range(b) if cnt[i] > 0)
    alt = (f"Top: bars of accuracy per confidence bin beside the dashed diagonal of perfect calibration; the hatched "
           f"part of a bar is the gap to the bin's mean confidence. Bottom: inputs per bin, log scale. Filled bins: {rows}.")
    return Explained(fig, caption, alt, title=title, data={"edges": e, "counts": cnt, "confidence": conf,
                                                          "accuracy": acc, "ece": float(ece)})


# --- error gallery ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GalleryRow:
    """One row of the gallery: the input (``C × H × W`` or ``H × W``, any range), the maps on
    one scale (``H × W``, CAMs in [0, 1], their difference in [−1, 1]) and its words."""

    image: np.ndarray
    cam_pred: np.ndarray
    cam_true: np.ndarray
    difference: np.ndarray
    kind: str  # "most confident wrong", ...
    true_name: str
    predicted_name: str
    index: int
    top3: Sequence[tuple[str, float]]
    deletion: float
    label_suspect: bool = False
    neighbours: str = ""  # e.g. "nearest training: #12 (4), #80 (9)"


def gallery_figure(rows: Sequence[GalleryRow], *, method: str, layer: str | None = None, n_inputs: int = 0,
                   note: str | None = None, palette: PaletteName = "default") -> Explained:
    """Per row: the input, the CAM of the predicted class, of the true class, their
    difference (predicted − true), and the top-3 probabilities as text. With no rows the
    figure says why (``note``, e.g. "no errors: ...")."""
    pal = get_palette(palette)
    rows = list(rows)[:MAX_GALLERY_ROWS]
    at = f" at {layer}" if layer else ""
    if not rows:
        fig = new_figure(5.0, 1.6)
        ax = fig.subplots()
        ax.set_axis_off()
        why = note or "the gallery is empty"
        ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, fontsize=9)
        caption = f"Error gallery of {n_inputs} inputs: {why}."
        return Explained(fig, caption, caption, title="Error gallery", data={"rows": []})
    fig = new_figure(9.2, 1.55 * len(rows) + 0.5)
    axes = fig.subplots(len(rows), 5, squeeze=False, width_ratios=[1, 1, 1, 1, 1.9])
    headers = ("input", f"{method}: predicted", f"{method}: true", "predicted − true", "top-3")
    for j, h in enumerate(headers):
        axes[0][j].set_title(h, fontsize=8)
    diff_norm = TwoSlopeNorm(vmin=-1.0, vcenter=0.0, vmax=1.0)
    words: list[str] = []
    kinds: dict[str, int] = {}
    for i, row in enumerate(rows):
        disp, gray = _display(row.image)
        a_in, a_p, a_t, a_d, a_txt = axes[i]
        a_in.imshow(disp, cmap=gray, interpolation="nearest")
        for ax, heat in ((a_p, row.cam_pred), (a_t, row.cam_true)):
            ax.imshow(disp, cmap=gray, interpolation="nearest")
            ax.imshow(np.clip(heat, 0, 1), cmap=pal.sequential, norm=Normalize(0, 1), alpha=0.55,
                      interpolation="bilinear")
        a_d.imshow(np.clip(row.difference, -1, 1), cmap=pal.diverging, norm=diff_norm, interpolation="bilinear")
        for ax in (a_in, a_p, a_t, a_d):
            ax.set_axis_off()
        flag = " [label suspect]" if row.label_suspect else ""
        top = "\n".join(f"{name}: {p:.3f}" for name, p in row.top3)
        text = (f"#{row.index} {row.kind}{flag}\ntrue {row.true_name}, predicted {row.predicted_name}\n{top}\n"
                f"deletion AUC {row.deletion:.3f}" + (f"\n{row.neighbours}" if row.neighbours else ""))
        a_txt.set_axis_off()
        a_txt.text(0.0, 0.5, text, fontsize=6.5, va="center", ha="left", family="monospace")
        kinds[row.kind] = kinds.get(row.kind, 0) + 1
        pw = where(np.clip(row.cam_pred, 0, None), row.image)
        words.append(f"input {row.index} ({row.kind}{flag}): true {row.true_name}, predicted {row.predicted_name} "
                     f"with p = {row.top3[0][1]:.3f}; the predicted-class map {pw.phrase()}")
    suspects = sum(r.label_suspect for r in rows)
    caption = (f"Error gallery{at} over {n_inputs} inputs: " + listing([f"{v} {k}" for k, v in kinds.items()])
               + (f"; {suspects} of them with a suspected label error" if suspects else "")
               + (f". {note}" if note else "") + ".")
    alt = ("A table of inputs, one per row. Columns: the input; the " + method + " map for the predicted class and "
           "for the true class drawn over it (" + pal.sequential + "); their difference, predicted minus true ("
           + pal.diverging + ", white for no difference); the top-3 probabilities. " + "; ".join(words) + ".")
    return Explained(fig, caption, alt, title="Error gallery", data={"rows": rows})


# --- confusion cells --------------------------------------------------------------------------


@dataclass(frozen=True)
class CellPanel:
    """One confusion cell: ``difference`` ``H × W`` is the mean CAM difference (predicted −
    true) of its ``averaged`` most confident inputs, or ``None`` if not explained."""

    true_name: str
    predicted_name: str
    count: int
    averaged: int
    difference: np.ndarray | None


def cells_figure(cells: Sequence[CellPanel], *, method: str, n_inputs: int,
                 palette: PaletteName = "default") -> Explained:
    """The largest confusion cells, each as its mean CAM difference: red where the predicted
    class draws more relevance than the true one, blue where the true class does."""
    pal = get_palette(palette)
    shown = [c for c in cells if c.difference is not None]
    if not shown:
        fig = new_figure(5.0, 1.6)
        ax = fig.subplots()
        ax.set_axis_off()
        why = "no confusion cell to show: no input is misclassified" if not cells else \
            "no confusion cell was explained"
        ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=9)
        caption = f"Confusion cells of {n_inputs} inputs: {why}."
        return Explained(fig, caption, caption, title="Confusion cells", data={"cells": []})
    cols = min(5, len(shown))
    grid = -(-len(shown) // cols)
    fig = new_figure(1.9 * cols + 0.9, 2.05 * grid + 0.3)
    axes = fig.subplots(grid, cols, squeeze=False)
    norm = TwoSlopeNorm(vmin=-1.0, vcenter=0.0, vmax=1.0)
    words = []
    for ax, c in zip(axes.flat, shown, strict=False):
        assert c.difference is not None  # filtered above
        d = np.clip(np.asarray(c.difference, dtype=np.float64), -1, 1)
        ax.imshow(d, cmap=pal.diverging, norm=norm, interpolation="bilinear")
        ax.set_title(f"{c.true_name} → {c.predicted_name}: {c.count}", fontsize=8)
        ax.set_axis_off()
        pos = where(np.clip(d, 0, None))
        words.append(f"{c.true_name} → {c.predicted_name} ({c.count} inputs, mean of {c.averaged}): the predicted "
                     f"class draws more relevance {'nowhere' if pos.empty else pos.region.replace('the ', 'in the ', 1)}"
                     f", peak difference {d.max():+.2f}, lowest {d.min():+.2f}")
    for ax in list(axes.flat)[len(shown):]:
        ax.set_axis_off()
    fig.colorbar(ScalarMappable(norm=norm, cmap=pal.diverging), ax=axes, shrink=0.8, fraction=0.04).set_label("mean CAM: predicted − true", fontsize=7)
    top = shown[0]
    colours = ("red", "blue") if pal.name == "default" else ("light", "dark")
    caption = (f"Confusion cells of {n_inputs} inputs, {method} ({len(shown)} largest shown): the largest is "
               f"{top.true_name} → {top.predicted_name} with {top.count} inputs; {colours[0]} marks where the "
               f"predicted class draws more relevance than the true one, {colours[1]} the reverse.")
    alt = (f"A grid of {len(shown)} maps, one per confusion cell (true → predicted class and count above each), "
           f"coloured {pal.diverging} from blue (−1, the true class's relevance is higher) through white (0) to red "
           f"(+1, the predicted class's). " + "; ".join(words) + ".")
    return Explained(fig, caption, alt, title="Confusion cells", data={"cells": shown})
