"""The main job: train seed-cnn on MNIST and write Figures 1–2 and an index.html.

>>> result = run_demo("convlens-demo", data_dir="../shared/data/mnist-9k")  # doctest: +SKIP
>>> result.accuracy                                                         # doctest: +SKIP

The output directory is written atomically: everything goes into a hidden
temporary directory beside it, which replaces ``out`` only when complete
(``manifest.json`` is the last file written). A failed or interrupted demo leaves
nothing behind that looks complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from convlens._atomic import atomic_dir, check_replaceable, claim
from convlens.train.config import TrainConfig

if TYPE_CHECKING:
    from convlens.train.callbacks import Callback
    from convlens.viz.figure import Explained

MANIFEST = "manifest.json"


def _label(figure: int, n: int, count: int) -> str:
    """``Figure 1`` for a figure of one layer, ``Figure 1a``, ``1b``, ... for several."""
    return f"Figure {figure}" + (chr(ord("a") + n) if count > 1 else "")


@dataclass
class DemoResult:
    out: Path
    accuracy: float
    figures: dict[str, Path] = field(default_factory=dict)  # stem -> PNG path
    index: Path | None = None


def _check_out(out: Path, overwrite: bool) -> None:
    """The output policy (:func:`convlens._atomic.check_replaceable`) for a demo output."""
    from convlens.models.run import RUN_FILES

    check_replaceable(out, overwrite=overwrite, what="demo output",
                      known=("run", "figures", *(f"run/{f}" for f in RUN_FILES)))


def run_demo(
    out: str | os.PathLike[str] = "convlens-demo",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    config: TrainConfig | None = None,
    digit: int = 7,
    layers: Sequence[str] = ("conv1", "conv2"),
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
) -> DemoResult:
    """Train ``seed-cnn`` on MNIST and write the run, figures and ``index.html`` into ``out``.

    Both splits are read once: the figures' input is the first ``digit`` of the test
    split the model was evaluated on. ``out`` is claimed while the demo runs; an earlier
    demo output there is replaced (when the new one is complete) only with ``overwrite``,
    and never while it holds files convlens did not write.
    """
    with claim(out):
        _check_out(Path(out), overwrite)
        return _run_demo(Path(out), data_dir, device, config, digit, layers, callbacks)


def _run_demo(out: Path, data_dir: str | os.PathLike[str] | None, device: str, config: TrainConfig | None,
              digit: int, layers: Sequence[str], callbacks: Sequence[Callback]) -> DemoResult:
    from convlens import views
    from convlens._progress import progress_bar
    from convlens.data import load_dataset
    from convlens.viz.curves import training_curve
    from convlens.viz.figure import save
    from convlens.viz.html import Entry, render_page

    train_data = load_dataset("mnist", "train", data_dir=data_dir)
    test_data = load_dataset("mnist", "test", data_dir=data_dir)
    cfg = config or TrainConfig()
    with atomic_dir(out) as tmp:
        run = views.train_run(tmp / "run", arch="seed-cnn", dataset="mnist", config=cfg, device=device,
                              callbacks=callbacks, data=(train_data, test_data))
        chosen = views.choose_input(run, digit=digit, data=test_data)
        # (stem, label, heading, figure): Figure 1 is the filters and Figure 2 the feature maps
        # (the names the commands and docs use), one letter per layer
        figs: list[tuple[str, str, str, Explained]] = []
        for n, layer in enumerate(layers):
            figs.append((f"filters-{layer}", _label(1, n, len(layers)), f"the learned filters of {layer}",
                         views.filters(run, layer)))
        for n, layer in enumerate(layers):
            figs.append((f"maps-{layer}", _label(2, n, len(layers)), f"feature maps of {layer} for {chosen.label}",
                         views.maps(run, chosen, layer, stage="conv")))
        figs.append(("training-curve", "Figure 3", "the training curve",
                     training_curve(run.metrics, title="seed-cnn on MNIST")))
        figs.append(("filters-evolution", "Figure 4", f"how the {run.snapshot_layer} filters evolved",
                     views.evolution(run)))
        entries, written = [], {}
        with progress_bar("drawing the figures", len(figs)) as bar:  # quiet off a terminal
            for stem, label, heading, fig in figs:
                paths = save(fig, tmp / "figures", stem)
                written[stem] = out / "figures" / paths["png"].name
                entries.append(Entry(heading, f"figures/{stem}.png", f"figures/{stem}.svg", fig.caption, fig.alt,
                                     label=label))
                bar.advance()
        acc = run.test_accuracy or 0.0
        ep = run.metrics["epochs"]
        intro = [
            f"convlens trained seed-cnn (conv1 16×5×5 → pool → conv2 32×5×5 → pool → fc) on "
            f"{run.config.data.train_size:,} MNIST digits for {ep[-1]['epoch']:g} epochs; "
            f"test accuracy {acc:.2%} on {run.config.data.test_size:,} held-out digits.",
            f"Data: {run.config.data.source}. The run (config, weights, metrics) is in run/; "
            "load it with convlens.load_run(\"run\").",
        ]
        (tmp / "index.html").write_text(render_page("convlens demo", intro, entries), encoding="utf-8")
        manifest = {
            "kind": "convlens-demo",
            "test_accuracy": acc,
            "run": "run",
            "figures": {stem: f"figures/{stem}.png" for stem, _, _, _ in figs},
            "index": "index.html",
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return DemoResult(out=out, accuracy=acc, figures=written, index=out / "index.html")
