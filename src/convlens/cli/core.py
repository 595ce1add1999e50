"""Commands of the main job: demo, train, layers, filters, maps, download."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from convlens.cli._app import app
from convlens.cli._common import (
    Inputs,
    console,
    data_dir_option,
    device_option,
    figures_dest,
    force_option,
    input_options,
    model_source,
    open_source,
    out_option,
    palette_option,
    parse_channels,
    print_written,
)

if TYPE_CHECKING:
    from convlens.inspect.feature_maps import Stage
    from convlens.train.callbacks import Callback
    from convlens.viz.palettes import PaletteName


@app.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("convlens-demo"), show_default=True,
              help="Output directory (with --force an earlier demo there is replaced when the new one completes).")
@data_dir_option
@device_option
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the default number of epochs (8).")
@click.option("--seed", type=int, default=0, show_default=True)
@force_option
def demo(out: Path, data_dir: Path | None, device: str, epochs: int | None, seed: int, force: bool) -> None:
    """Train seed-cnn on MNIST; write its filters (Figure 1), the feature maps of a '7'
    (Figure 2), the training curve and an index.html into OUT."""
    from convlens.demo import run_demo
    from convlens.train import RichProgress, TrainConfig

    cfg = TrainConfig(seed=seed).updated(epochs=epochs)
    con = console()
    result = run_demo(out, data_dir=data_dir, device=device, config=cfg,
                      callbacks=[RichProgress("seed-cnn on MNIST")], overwrite=force)
    con.print(f"\ntest accuracy: [bold]{result.accuracy:.2%}[/]")
    con.print(f"run:     {result.out / 'run'}")
    for stem, path in result.figures.items():
        con.print(f"figure:  {path}  ({stem})")
    con.print(f"open:    [bold]{result.index}[/]")


@app.command()
@click.option("--arch", default="seed-cnn", show_default=True, help="Architecture name (see `convlens models`).")
@click.option("--dataset", default="mnist", show_default=True,
              help="mnist, fashion-mnist, kmnist, cifar10, cifar100, folder:PATH[?size=32] or npz:PATH "
                   "(see docs/data.md).")
@data_dir_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory [default: runs/<arch>-<dataset>-seed<seed>].")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs [default: 8].")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Train this many steps instead of epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="[default: 64]")
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 3e-3].")
@click.option("--optimizer", type=click.Choice(["adamw", "adam", "sgd"]), default=None, help="[default: adamw]")
@click.option("--schedule", type=click.Choice(["onecycle", "cosine", "constant"]), default=None,
              help="[default: onecycle]")
@click.option("--augment-shift", type=click.IntRange(min=0), default=None,
              help="Random shifts of up to this many pixels; 0 turns augmentation off [default: 2].")
@click.option("--snapshot-every", type=click.IntRange(min=0), default=None,
              help="Record first-layer filters every N steps; 0: never [default: 50].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--track", is_flag=True,
              help="Record the network on a fixed probe set while training, into RUN/tracking/ (and TensorBoard "
                   "events when the tensorboard extra is installed); training itself is unchanged.")
@click.option("--track-every", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --track: steps between two records [default: 200].")
@device_option
@force_option
def train(arch: str, dataset: str, data_dir: Path | None, out: Path | None, device: str, seed: int, force: bool,
          track: bool, track_every: int | None, **overrides: int | float | str | None) -> None:
    """Train a model and write a run directory (config, weights, metrics, filter snapshots).

    An existing run is replaced only with --force (when the first epoch completes), and
    never while it holds files convlens did not write. Ctrl-C keeps a valid run holding
    the last completed epoch.
    """
    from convlens import views
    from convlens.train import RichProgress, TrainConfig

    cfg = TrainConfig(seed=seed).updated(**overrides)
    out = out or views.default_run_dir(arch, dataset, seed)
    con = console()
    callbacks: list[Callback] = [RichProgress(f"{arch} on {dataset}")]
    if track_every is not None and not track:
        raise click.UsageError("--track-every goes with --track")
    tracker = None
    if track:
        from convlens.train.tracking import DEFAULT_EVERY, Tracker

        tracker = Tracker(track_every or DEFAULT_EVERY)
        callbacks.append(tracker)
    metrics = out / "metrics.json"
    before = metrics.stat().st_mtime_ns if metrics.exists() else None
    try:
        run = views.train_run(out, arch=arch, dataset=dataset, data_dir=data_dir, config=cfg, device=device,
                              callbacks=callbacks, overwrite=force)
    except KeyboardInterrupt:
        if before is not None and metrics.exists() and metrics.stat().st_mtime_ns == before:
            con.print(f"interrupted before the first epoch completed: {out} still holds the earlier run")
        elif metrics.exists():
            con.print(f"interrupted: {out} holds the last completed epoch")
        else:
            con.print("interrupted before the first epoch completed: no run was written")
        raise
    con.print(f"test accuracy: [bold]{run.test_accuracy:.2%}[/]")
    con.print(f"run: [bold]{out}[/]")
    if tracker is not None:
        con.print(f"tracking: [bold]{out / 'tracking'}[/] ({len(tracker.records)} records, every {tracker.every} steps)")
        if tracker.use_tb:  # one unwrapped line, to copy
            click.echo(f"tensorboard: {tracker.hint(out)}")
        else:
            click.echo("tensorboard: not written (pip install 'convlens[tensorboard]' for TensorBoard events)")


@app.command()
def models() -> None:
    """List the registered architectures."""
    from convlens.models import list_models

    for name, description in list_models().items():
        click.echo(f"{name:14s} {description}")


@app.command("import-weights")
@click.argument("weights", type=click.Path(path_type=Path))
@click.option("--arch", default="seed-cnn", show_default=True, help="The architecture the weights belong to.")
@click.option("--dataset", default="mnist", show_default=True, help="The data the model reads.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory to create.")
@force_option
def import_weights(weights: Path, arch: str, dataset: str, out: Path, force: bool) -> None:
    """Make a run from a foreign state dict (.pt read with weights_only=True, or .safetensors).

    An existing run at --out is replaced only with --force."""
    from convlens.models.run import import_weights as do_import

    run = do_import(weights, out, arch=arch, dataset=dataset, overwrite=force)
    click.echo(f"run: {run.path}")


@app.command()
@click.argument("dataset", default="mnist")
def download(dataset: str) -> None:
    """Download DATASET (mnist, fashion-mnist, kmnist, cifar10, cifar100) into the cache, verifying checksums."""
    from convlens.data.sources import download as fetch

    if dataset in ("cifar10", "cifar100"):
        from convlens.data.cifar import locate_cifar

        click.echo(f"{dataset:13s} {locate_cifar(dataset)[0]}")
        return
    paths = fetch(dataset)
    for key, path in paths.items():
        click.echo(f"{key:13s} {path}")


@app.command()
@model_source
@click.option("--layer", default="conv1", show_default=True, help="A conv layer of the model.")
@click.option("--scale", type=click.Choice(["shared", "per-filter"]), default="shared", show_default=True,
              help="One colour scale for all filters, or one per filter.")
@click.option("--rgb/--per-channel", default=None,
              help="Filters with 3 input channels: draw as RGB (default) or one tile per channel.")
@click.option("--evolution", is_flag=True, help="Also draw how the first layer's filters evolved in training.")
@palette_option
@out_option()
def filters(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
            layer: str, scale: Literal["shared", "per-filter"], rgb: bool | None, evolution: bool,
            palette: PaletteName, out: Path | None, force: bool) -> None:
    """Figure 1: the filters of a conv layer of RUN (or --model) in a grid."""
    from convlens import views
    from convlens.errors import ConfigError
    from convlens.viz.figure import figure_stem, save

    h = open_source(run, spec, weights, dataset, input_shape)
    gray = "gray" if palette == "gray" else None
    view = {True: "rgb", False: "per-channel", None: None}[rgb]
    stem = figure_stem("filters", layer, scale if scale != "shared" else None, view, gray)
    evolution_stem = figure_stem("filters-evolution", gray)
    if evolution and h.run is None:
        raise ConfigError("--evolution needs a run directory (its filter snapshots)")
    dest = figures_dest(h, out, [stem, evolution_stem] if evolution else [stem], force)
    fig = views.filters(h, layer, scale=scale, palette=palette, rgb=rgb)
    print_written(save(fig, dest, stem, overwrite=force), "filters")
    click.echo(fig.caption)
    if evolution and h.run is not None:
        print_written(save(views.evolution(h.run, palette=palette), dest, evolution_stem, overwrite=force),
                      "evolution")


@app.command()
@model_source
@input_options()
@click.option("--layer", default="conv1", show_default=True, help="Any layer with spatial output.")
@click.option("--stage", type=click.Choice(["conv", "relu", "pool"]), default="conv", show_default=True,
              help="Read the maps after the conv, after its activation, or after its pooling.")
@click.option("--sort", is_flag=True, help="Order the maps by maximum activation, strongest first.")
@click.option("--scale", type=click.Choice(["shared", "per-map"]), default="shared", show_default=True)
@click.option("--channels", default=None, metavar="LIST",
              help="Only these channels, e.g. 0-7,12 [default: all; a figure draws at most 256 maps].")
@palette_option
@data_dir_option
@device_option
@out_option()
def maps(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
         inputs: Inputs, layer: str, stage: Stage, sort: bool, scale: Literal["shared", "per-map"],
         channels: str | None, palette: PaletteName, data_dir: Path | None, device: str, out: Path | None,
         force: bool) -> None:
    """Figure 2: an input beside the feature maps of any layer of RUN (or --model)."""
    from convlens import views
    from convlens.viz.figure import figure_stem, save

    h = open_source(run, spec, weights, dataset, input_shape, device)
    picked = parse_channels(channels)
    stem = figure_stem("maps", layer, stage, inputs.slug(), f"ch{channels}" if channels else None,
                       "sorted" if sort else None, scale if scale != "shared" else None,
                       "gray" if palette == "gray" else None)
    dest = figures_dest(h, out, [stem], force)
    chosen = views.choose_input(h, **inputs.choice(), data_dir=data_dir)
    fig = views.maps(h, chosen, layer, stage=stage, sort=sort, scale=scale, palette=palette, channels=picked)
    print_written(save(fig, dest, stem, overwrite=force), "feature maps")
    click.echo(fig.caption)


@app.command()
@model_source
@click.option("--arch", default=None, metavar="NAME",
              help="A registered architecture instead of RUN (see `convlens models`), untrained: the names and "
                   "shapes its weights need (e.g. for import-weights).")
@device_option
def layers(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
           arch: str | None, device: str) -> None:
    """Each layer's name, type, output shape for the model's input size, and parameter count."""
    from convlens.inspect import layers as list_layers

    h = open_source(run, spec, weights, dataset, input_shape, device, arch=arch)
    table = list_layers(h.model, h.input_shape)
    console().print(table)
