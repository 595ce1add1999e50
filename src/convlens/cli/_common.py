"""Options and output helpers shared by the command modules (no library logic)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def data_dir_option(f: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        envvar="CONVLENS_DATA_DIR",
        show_envvar=True,
        help="Use the IDX files in this directory; nothing is downloaded.",
    )(f)


def device_option(f: F) -> F:
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda", "mps"]),
        default="auto",
        show_default=True,
        help="Where to compute; auto picks cuda, then mps, then cpu.",
    )(f)


def palette_option(f: F) -> F:
    return click.option(
        "--palette",
        type=click.Choice(["default", "gray"]),
        default="default",
        show_default=True,
        help="default: colour-blind-safe palettes; gray: grayscale.",
    )(f)


def out_option(default: str | None = None) -> Callable[[F], F]:
    def deco(f: F) -> F:
        return click.option(
            "--out",
            type=click.Path(path_type=Path),
            default=default,
            help="Directory to write the figures into." + (f" [default: {default}]" if default else " [default: the run directory's figures/]"),
        )(f)

    return deco


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def print_written(paths: dict[str, Path], what: str) -> None:
    console().print(f"{what}: [bold]{paths['png']}[/] (+ .svg, .json)")


def model_source(f: F) -> F:
    """RUN (a run directory) or --model module:factory [--weights FILE] for any nn.Module."""
    f = click.option("--input-shape", default=None, metavar="C,H,W",
                     help="With --model: the shape of one input [default: the dataset's, 1,28,28].")(f)
    f = click.option("--dataset", default="mnist", show_default=True,
                     help="With --model: the dataset the model reads (for inputs and normalisation).")(f)
    f = click.option("--weights", type=click.Path(path_type=Path), default=None,
                     help="With --model: a state dict (.pt/.pth read with weights_only=True, or .safetensors).")(f)
    f = click.option("--model", "spec", default=None, metavar="MODULE:FACTORY",
                     help="Your own model instead of RUN: a factory importable as package.module:function.")(f)
    return click.argument("run", type=click.Path(path_type=Path), required=False)(f)


def open_source(run: Path | None, spec: str | None, weights: Path | None, dataset: str,
                input_shape: str | None) -> Any:
    from convlens.models.handle import open_model

    return open_model(run, spec=spec, weights=weights, input_shape=input_shape, dataset=dataset)
