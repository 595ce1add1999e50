"""`convlens compare`: two models, layer by layer, filter by filter, example by example."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from convlens.cli._app import app
from convlens.cli._common import (
    console,
    data_dir_option,
    device_option,
    force_option,
    palette_option,
)

if TYPE_CHECKING:
    from convlens.viz.palettes import PaletteName


@app.command()
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path), metavar="[RUN_A] [RUN_B]")
@click.option("--model", "spec_a", default=None, metavar="MODULE:FACTORY", help="Model A as your own factory instead of RUN_A.")
@click.option("--weights", "weights_a", type=click.Path(path_type=Path), default=None, help="With --model: A's state dict.")
@click.option("--model-b", "spec_b", default=None, metavar="MODULE:FACTORY", help="Model B as your own factory instead of RUN_B.")
@click.option("--weights-b", "weights_b", type=click.Path(path_type=Path), default=None, help="With --model-b: B's state dict.")
@click.option("--dataset", default="mnist", show_default=True, help="With --model/--model-b: the dataset they read.")
@click.option("--input-shape", default=None, metavar="C,H,W", help="With --model/--model-b: one input's shape.")
@click.option("--layers", default=None, metavar="A1,A2,...", help="Layers to compare [default: every conv layer].")
@click.option("--layers-b", default=None, metavar="B1,B2,...", help="Layers of B [default: the same names as --layers].")
@click.option("--estimator", type=click.Choice(["exact", "minibatch"]), default="exact", show_default=True)
@click.option("--pool", type=click.Choice(["flatten", "mean"]), default="flatten", show_default=True,
              help="Conv features as C·H·W (flatten) or averaged over space (mean).")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--probe/--no-probe", default=True, show_default=True, help="Fit linear probes on the train split.")
@click.option("--probe-epochs", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--gallery", type=click.IntRange(min=0), default=6, show_default=True, help="Disagreements to draw.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("compare"), show_default=True,
              help="Directory for the figures and compare.json.")
@force_option
@palette_option
@data_dir_option
@device_option
def compare(runs: tuple[Path, ...], spec_a: str | None, weights_a: Path | None, spec_b: str | None,
            weights_b: Path | None, dataset: str, input_shape: str | None, layers: str | None, layers_b: str | None,
            estimator: Literal["exact", "minibatch"], pool: Literal["flatten", "mean"], split: Literal["test", "train"],
            probe: bool, probe_epochs: int, gallery: int, batch_size: int, out: Path, force: bool, palette: PaletteName,
            data_dir: Path | None, device: str) -> None:
    """Compare two models: CKA of their layers, matched filters, disagreements, linear probes.

    Give two run directories, or --model (A) and/or --model-b (B) for your own models."""
    from convlens import views
    from convlens._atomic import write_files
    from convlens.cli._common import open_source
    from convlens.errors import ConfigError
    from convlens.viz.figure import check_figures, save

    left = list(runs)
    handles = []
    for which, spec, weights in (("A", spec_a, weights_a), ("B", spec_b, weights_b)):
        if spec is None and not left:
            raise ConfigError(f"model {which} is missing: give RUN_A RUN_B, or --model/--model-b MODULE:FACTORY")
        run = None if spec is not None else left.pop(0)
        handles.append(open_source(run, spec, weights, dataset, input_shape, device))
    if left:
        raise ConfigError(f"{len(runs)} run directories given for the models left: give at most two (RUN_A RUN_B)")
    names_a = _names(layers)
    check_figures(out, views.COMPARE_FIGURES, overwrite=force, files=("compare.json",))  # before the work
    view = views.compare_models(handles[0], handles[1], layers_a=names_a, layers_b=_names(layers_b) or names_a,
                                estimator=estimator, pool=pool, split=split, probe=probe, probe_epochs=probe_epochs,
                                gallery=gallery, batch_size=batch_size, data_dir=data_dir, palette=palette)
    con = console()
    con.print(view.similarity)
    con.print(view.match.summary())
    con.print(view.disagreement.summary())
    if view.probe is not None:
        for side, accs in view.probe.accuracy.items():
            con.print(f"linear probe, model {side.upper()} ({view.probe.epochs} epochs on {view.probe.n_train:,} train "
                      f"inputs): " + ", ".join(f"{k} {v:.2%}" for k, v in accs.items()))
    for w in view.similarity.warnings:
        con.print(f"[yellow]warning:[/] {w}")
    for stem, fig in view.figures.items():
        save(fig, out, stem, overwrite=force)
    write_files(out, {"compare.json": (json.dumps(view.to_dict(), indent=1) + "\n").encode()}, overwrite=force)
    con.print(f"figures ({', '.join(view.figures)}) and compare.json: [bold]{out}[/]")


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise click.BadParameter("no layer names given", param_hint="--layers")
    return names
