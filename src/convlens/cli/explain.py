"""Commands that explain predictions: cam, faithfulness."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from convlens.cli._app import app
from convlens.cli._common import (
    Inputs,
    MethodsCommand,
    console,
    data_dir_option,
    device_option,
    engine_options,
    figures_dest,
    input_options,
    method_option,
    model_source,
    open_source,
    out_option,
    palette_option,
    print_written,
)

if TYPE_CHECKING:
    from convlens.viz.palettes import PaletteName


def _layers(layer: tuple[str, ...]) -> str | list[str] | None:
    return None if not layer else layer[0] if len(layer) == 1 else list(layer)


def _methods(text: str) -> str | list[str]:
    return "all" if text.strip() == "all" else [m.strip() for m in text.split(",") if m.strip()]


def _target(target: str) -> str:
    """The target as a figure names it: pred, class3, top3."""
    t = target.strip()
    return f"class{t}" if t.isdigit() else t


_LAYER_HELP = "Layer for the CAM methods (repeat for several) [default: the last layer with a spatial output]."


@app.command(cls=MethodsCommand)
@model_source
@input_options()
@method_option
@click.option("--methods", default=None, metavar="M1,M2,...|all",
              help="Several methods side by side with the predicted probabilities (overrides --method).")
@click.option("--layer", multiple=True, help=_LAYER_HELP)
@click.option("--target", default="pred", show_default=True,
              help="pred (the predicted class), a class index, or topK (the K most likely classes).")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Heatmap opacity.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Perturbation methods: modified inputs per forward pass [default: 64].")
@palette_option
@data_dir_option
@device_option
@out_option()
def cam(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
        inputs: Inputs, method: str, methods: str | None, layer: tuple[str, ...], target: str, alpha: float,
        batch_size: int | None, palette: PaletteName, data_dir: Path | None, device: str, out: Path | None,
        force: bool) -> None:
    """Which regions of one input drive the prediction of RUN (or --model): a heatmap over it."""
    from convlens import views
    from convlens.viz.figure import figure_stem, save

    h = open_source(run, spec, weights, dataset, input_shape, device)
    several = _methods(methods) if methods is not None else None
    what = method if several is None else "compare-" + (several if isinstance(several, str) else "+".join(several))
    stem = figure_stem("cam", what, "+".join(layer), _target(target), inputs.slug(),
                       "gray" if palette == "gray" else None)
    dest = figures_dest(h, out, [stem], force)
    chosen = views.choose_input(h, **inputs.choice(), data_dir=data_dir)
    if several is not None:
        fig = views.compare_view(h, chosen, methods=several, layer=_layers(layer), target=target,
                                 palette=palette, alpha=alpha, batch_size=batch_size)
    else:
        fig = views.cam_view(h, chosen, method=method, layer=_layers(layer), target=target, palette=palette,
                             alpha=alpha, batch_size=batch_size)
    print_written(save(fig, dest, stem, overwrite=force), "heatmap")
    click.echo(fig.caption)


@app.command(cls=MethodsCommand)
@model_source
@click.option("--methods", default="gradcam", show_default=True, metavar="M1,M2,...|all",
              help="Methods to score, comma-separated, or all.")
@click.option("--n", type=click.IntRange(min=1), default=500, show_default=True,
              help="Score on this many images (a seeded random sample of the split).")
@click.option("--layer", multiple=True, help=_LAYER_HELP)
@click.option("--target", default="pred", show_default=True, help="pred or a class index.")
@click.option("--steps", type=click.IntRange(min=1), default=32, show_default=True,
              help="Points of the deletion and insertion curves (besides the start).")
@click.option("--sanity-images", type=click.IntRange(min=0), default=32, show_default=True,
              help="Images for the model-randomisation check (0 skips it).")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the image sample.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images explained per batch (perturbed copies run four times as many).")
@palette_option
@data_dir_option
@device_option
@out_option()
@engine_options
def faithfulness(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
                 methods: str, n: int, layer: tuple[str, ...], target: str, steps: int, sanity_images: int,
                 split: Literal["test", "train"], seed: int, batch_size: int, palette: PaletteName,
                 data_dir: Path | None, device: str, out: Path | None, force: bool, engine: str = "inprocess",
                 address: str | None = None) -> None:
    """How faithful are the heatmaps of RUN (or --model)? Deletion/insertion AUC, Average Drop,
    Increase in Confidence and the model-randomisation check, as a table and curves."""
    import json

    from rich.table import Table

    from convlens import views
    from convlens.viz.figure import figure_stem, save

    h = open_source(run, spec, weights, dataset, input_shape, device)
    names = _methods(methods)
    stem = figure_stem("faithfulness", names if isinstance(names, str) else "+".join(names), "+".join(layer),
                       _target(target), split, f"n{n}", f"seed{seed}" if seed else None,
                       "gray" if palette == "gray" else None)
    dest = figures_dest(h, out, [stem], force, extra=("scores.json",))  # before the work, not after
    view = views.faithfulness(h, _methods(methods), n=n, layer=_layers(layer), target=target, steps=steps,
                              sanity_images=sanity_images, split=split, seed=seed, batch_size=batch_size,
                              data_dir=data_dir, palette=palette, engine=engine, address=address)
    report = view.report
    table = Table(title=f"Faithfulness on {report.n_images} {split} images of {view.dataset}")
    for col in ("method", "deletion AUC ↓", "insertion AUC ↑", "Avg Drop % ↓", "Inc Conf % ↑", "random ρ ↓"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for row in report.rows():
        rho = row["randomisation_correlation"]
        rho_text = "–" if rho is None else f"{rho:.2f}" + (" [bold red]flagged[/]" if row["flagged"] else "")
        table.add_row(row["method"], f"{row['deletion_auc']:.3f}", f"{row['insertion_auc']:.3f}",
                      f"{row['average_drop']:.1f}", f"{row['increase_in_confidence']:.1f}", rho_text)
    con = console()
    con.print(table)
    con.print("↓ lower is better, ↑ higher is better; ρ: rank correlation with the maps of the model with "
              "random weights (flagged at 0.5 or more)")
    for s in report.scores.values():
        if s.sanity is not None and s.sanity.flagged:
            con.print(s.sanity.message())
    scores = (json.dumps(report.to_dict(), indent=2) + "\n").encode()
    paths = save(view.figure, dest, stem, overwrite=force, extra={"scores.json": scores})
    print_written(paths, "curves")
    con.print(f"scores: [bold]{paths['scores.json']}[/]")
