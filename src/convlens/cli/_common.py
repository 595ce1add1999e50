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
