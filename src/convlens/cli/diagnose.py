"""The diagnose command: where and why a model is wrong over a whole split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from convlens.cli._app import app
from convlens.cli._common import (
    MethodName,
    MethodsCommand,
    console,
    data_dir_option,
    device_option,
    figures_dest,
    model_source,
    open_source,
    out_option,
    palette_option,
)

if TYPE_CHECKING:
    from convlens.viz.figure import Explained
    from convlens.viz.palettes import PaletteName

#: The figures the command writes, in the order it lists them.
FIGURES = ("confusion", "reliability", "gallery", "cells")
REPORT = "diagnosis.json"


def _figure_files(fig: Explained, stem: str) -> dict[str, bytes]:
    """``stem.png``, ``stem.svg`` and the sidecar ``stem.json``, as :func:`convlens.viz.figure.save` writes them."""
    sidecar = {"title": fig.title, "caption": fig.caption, "alt": fig.alt, "png": f"{stem}.png",
               "svg": f"{stem}.svg", "software": "convlens", "files": [f"{stem}.png", f"{stem}.svg"]}
    return {f"{stem}.png": fig.png_bytes(), f"{stem}.svg": fig.svg_bytes(),
            f"{stem}.json": (json.dumps(sidecar, indent=2) + "\n").encode()}


@app.command(cls=MethodsCommand)
@model_source
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="The split to diagnose.")
@click.option("--k", "k", type=click.IntRange(min=0), default=24, show_default=True,
              help="Gallery size: most confident wrong, least confident right and most ambiguous, a third each.")
@click.option("--method", type=MethodName(), default="gradcam", show_default=True,
              help="The method of the gallery's and the cells' CAMs (see Methods below).")
@click.option("--layer", multiple=True,
              help="Layer of the gallery's CAMs (repeat for several) [default: the last layer with a spatial output].")
@click.option("--neighbours", type=click.IntRange(min=0), default=5, show_default=True,
              help="Nearest training examples per gallery item (penultimate features, cosine; 0: none).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Inputs per forward pass.")
@palette_option
@data_dir_option
@device_option
@out_option()
def diagnose(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
             split: Literal["test", "train"], k: int, method: str, layer: tuple[str, ...], neighbours: int,
             batch_size: int, palette: PaletteName, data_dir: Path | None, device: str, out: Path | None,
             force: bool) -> None:
    """Why RUN (or --model) is wrong on a split: confusion matrix, calibration, an error gallery with the
    CAMs of the predicted and the true class, suspected label errors; figures and diagnosis.json."""
    from convlens import views
    from convlens._atomic import write_files
    from convlens.viz.figure import figure_stem

    h = open_source(run, spec, weights, dataset, input_shape, device)
    stems = {name: figure_stem("diagnose", name, split, method if name in ("gallery", "cells") else None,
                               "+".join(layer), "gray" if palette == "gray" else None) for name in FIGURES}
    dest = figures_dest(h, out, list(stems.values()), force, files=(REPORT,))  # before the work
    chosen = None if not layer else layer[0] if len(layer) == 1 else list(layer)
    view = views.diagnosis(h, split, k=k, method=method, layer=chosen, neighbours=neighbours,
                           batch_size=batch_size, data_dir=data_dir, palette=palette)
    content: dict[str, bytes] = {}
    for name in FIGURES:
        content.update(_figure_files(view.figures[name], stems[name]))
    report = {"dataset": view.dataset, "split": split, **view.diagnosis.to_dict(),
              # by file stem, as compare.json and audit.json list theirs (the report and app read them)
              "figures": {stems[name]: {"figure": name, "caption": view.figures[name].caption,
                                        "alt": view.figures[name].alt} for name in FIGURES}}
    content[REPORT] = (json.dumps(report, indent=2) + "\n").encode()
    paths = write_files(dest, content, overwrite=force)  # all of it or nothing, the report last
    click.echo(view.diagnosis.summary())
    con = console()
    for name in FIGURES:
        con.print(f"{name}: [bold]{paths[stems[name] + '.png']}[/] (+ .svg, .json)")
    con.print(f"diagnosis: [bold]{paths[REPORT]}[/]")
