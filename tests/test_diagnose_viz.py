"""The diagnosis figures draw the numbers they are given and describe them in words."""

from __future__ import annotations

import numpy as np

from convlens.viz.diagnose import (
    CellPanel,
    GalleryRow,
    cells_figure,
    confusion_figure,
    gallery_figure,
    reliability_figure,
)


def test_confusion_matrix_prints_every_count_and_names_the_worst_cells() -> None:
    cm = np.array([[50, 2, 0], [7, 40, 3], [0, 0, 30]])
    fig = confusion_figure(cm, ["cat", "dog", "fox"])
    ax = fig.figure.axes[0]
    printed = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text()) for t in ax.texts}
    assert printed == {(i, j): int(cm[i, j]) for i in range(3) for j in range(3)}
    np.testing.assert_allclose(ax.images[0].get_array(), cm / cm.sum(1, keepdims=True))
    assert fig.caption == ("Confusion matrix of 132 inputs: 120 correct (90.9%); most confused: dog → cat (7), "
                           "dog → fox (3) and cat → dog (2).")
    assert "recalled worst is dog (80.0%)" in fig.alt
    assert ax.images[0].get_cmap().name == "viridis"


def test_reliability_diagram_draws_the_bins() -> None:
    edges = np.linspace(0, 1, 16)
    counts = np.zeros(15, dtype=np.int64)
    conf = np.full(15, np.nan)
    acc = np.full(15, np.nan)
    counts[[9, 14]] = [10, 90]
    conf[[9, 14]] = [0.63, 0.98]
    acc[[9, 14]] = [0.5, 0.99]
    ece = 0.1 * 0.13 + 0.9 * 0.01
    fig = reliability_figure(edges, counts, conf, acc, ece)
    bars = [p.get_height() for p in fig.figure.axes[0].patches[:2]]
    np.testing.assert_allclose(bars, [0.5, 0.99])
    assert "ECE 0.0220" in fig.caption and "over-confident" in fig.caption
    assert "(0.60, 0.67]: 10 inputs, confidence 0.630, accuracy 0.500" in fig.alt


def test_gallery_and_cells_describe_their_rows() -> None:
    yy, xx = np.mgrid[:8, :8]
    up = (yy < 3).astype(np.float64)
    down = (yy > 4).astype(np.float64)
    row = GalleryRow(image=(xx % 2).astype(np.float64), cam_pred=up, cam_true=down, difference=up - down,
                     kind="most confident wrong", true_name="4", predicted_name="9", index=17,
                     top3=[("9", 0.9), ("4", 0.08), ("7", 0.01)], deletion=0.12, label_suspect=True)
    fig = gallery_figure([row], method="Grad-CAM", layer="conv2", n_inputs=100)
    assert fig.caption == ("Error gallery at conv2 over 100 inputs: 1 most confident wrong; 1 of them with a "
                           "suspected label error.")
    assert "input 17 (most confident wrong [label suspect]): true 4, predicted 9 with p = 0.900" in fig.alt
    assert "upper half" in fig.alt
    np.testing.assert_array_equal(fig.figure.axes[3].images[0].get_array(), up - down)
    cells = cells_figure([CellPanel("4", "9", 12, 12, up - down), CellPanel("3", "5", 2, 0, None)],
                         method="Grad-CAM", n_inputs=100)
    assert "the largest is 4 → 9 with 12 inputs" in cells.caption
    assert "4 → 9 (12 inputs, mean of 12): the predicted class draws more relevance in the upper half" in cells.alt
