"""Commands that explain predictions: cam, faithfulness."""

from __future__ import annotations

from pathlib import Path

import click

from convlens.cli._app import app
from convlens.cli._common import (
    console,
    data_dir_option,
    device_option,
    model_source,
    open_source,
    out_option,
    palette_option,
    print_written,
)


def _layers(layer: tuple[str, ...]) -> str | list[str] | None:
    return None if not layer else layer[0] if len(layer) == 1 else list(layer)


def _methods(text: str) -> str | list[str]:
    return "all" if text.strip() == "all" else [m.strip() for m in text.split(",") if m.strip()]


_LAYER_HELP = "Layer for the CAM methods (repeat for several) [default: the last layer with a spatial output]."


@app.command()
@model_source
@click.option("--digit", default=None, help="Explain the first test example of this class (e.g. 7).")
@click.option("--index", type=int, default=None, help="Explain this example of the split.")
@click.option("--image", type=click.Path(path_type=Path), default=None, help="Explain this image file.")
@click.option("--nth", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --digit: take the nth example of that class (0 is the first).")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--method", default="gradcam", show_default=True,
              help="One method: gradcam, gradcam++, xgradcam, hirescam, layercam, eigencam, scorecam, "
                   "ablationcam, saliency, smoothgrad, guided-backprop, guided-gradcam, integrated-gradients, "
                   "occlusion.")
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
        digit: str | None, index: int | None, image: Path | None, nth: int, split: str, method: str,
        methods: str | None, layer: tuple[str, ...], target: str, alpha: float, batch_size: int | None,
        palette: str, data_dir: Path | None, device: str, out: Path | None) -> None:
    """Which regions of one input drive the prediction of RUN (or --model): a heatmap over it."""
    from convlens import views
    from convlens.train.device import resolve_device
    from convlens.viz.explain import cam_view, compare_view
    from convlens.viz.figure import save

    h = open_source(run, spec, weights, dataset, input_shape)
    h.model.to(resolve_device(device))
    d: int | str | None = int(digit) if digit is not None and digit.isdigit() else digit
    chosen = views.choose_input(h, digit=d, index=index, image=image, nth=nth, split=split, data_dir=data_dir)
    options = {} if batch_size is None else {"batch_size": batch_size}
    names = h.data.classes or None
    if methods is not None:
        fig = compare_view(h, chosen, methods=_methods(methods), layer=_layers(layer), target=target,
                           palette=palette, alpha=alpha, class_names=names, **options)
        stem = "cam-compare"
    else:
        fig = cam_view(h, chosen, method=method, layer=_layers(layer), target=target, palette=palette,
                       alpha=alpha, class_names=names, **options)
        stem = f"cam-{method}" + ("-" + "-".join(layer).replace(".", "-") if layer else "")
    print_written(save(fig, h.figures_dir(out), stem), "heatmap")
    click.echo(fig.caption)


@app.command()
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
def faithfulness(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
                 methods: str, n: int, layer: tuple[str, ...], target: str, steps: int, sanity_images: int,
                 split: str, seed: int, batch_size: int, palette: str, data_dir: Path | None, device: str,
                 out: Path | None) -> None:
    """How faithful are the heatmaps of RUN (or --model)? Deletion/insertion AUC, Average Drop,
    Increase in Confidence and the model-randomisation check, as a table and curves."""
    import json

    from rich.table import Table

    from convlens._atomic import write_text_atomic
    from convlens.data import load_dataset
    from convlens.explain import faithfulness as score
    from convlens.train.device import resolve_device
    from convlens.viz.explain import faithfulness_figure
    from convlens.viz.figure import save

    h = open_source(run, spec, weights, dataset, input_shape)
    h.model.to(resolve_device(device))
    data = load_dataset(h.data.name, split, data_dir=data_dir)
    report = score(h.model, data, _methods(methods), n=n, layer=_layers(layer), target=target, steps=steps,
                   sanity_images=sanity_images, seed=seed, batch_size=batch_size, progress=None)
    table = Table(title=f"Faithfulness on {report.n_images} {split} images of {h.data.name}")
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
    dest = h.figures_dir(out)
    fig = faithfulness_figure(report.curves(), n_images=report.n_images, palette=palette)
    print_written(save(fig, dest, "faithfulness"), "curves")
    write_text_atomic(dest / "faithfulness-scores.json", json.dumps(report.to_dict(), indent=2) + "\n")
    con.print(f"scores: [bold]{dest / 'faithfulness-scores.json'}[/]")
