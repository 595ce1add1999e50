"""Options and output helpers shared by the command modules (parsing and printing only)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

if TYPE_CHECKING:
    from rich.console import Console

    from convlens.models.handle import ModelHandle

F = TypeVar("F", bound=Callable[..., Any])


def data_dir_option(f: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        envvar="CONVLENS_DATA_DIR",
        show_envvar=True,
        help="Use the IDX files (or CIFAR's extracted folder or archive) in this directory; nothing is downloaded.",
    )(f)


def device_option(f: F) -> F:
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda", "mps"]),
        default="auto",
        show_default=True,
        help="Where to compute; auto picks cuda, then mps, then cpu.",
    )(f)


def engine_options(f: F) -> F:
    """``--engine inprocess|ray`` and ``--address ADDR``: where a dataset pass runs (see
    :mod:`convlens.inspect.executors`); the command receives ``engine`` and ``address``."""

    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        if kwargs["address"] is not None and kwargs["engine"] != "ray":
            raise click.UsageError("--address goes with --engine ray (the Ray cluster to run the pass on)")
        return f(*args, **kwargs)

    g = click.option("--address", default=None, metavar="ADDR",
                     help="With --engine ray: the Ray cluster, as `ray start --head` printed it, or auto "
                          "[default: RAY_ADDRESS, else a new local cluster].")(command)
    return cast(F, click.option("--engine", type=click.Choice(["inprocess", "ray"]), default="inprocess",
                                show_default=True,
                                help="Where the pass over the data runs: here, or on a Ray cluster "
                                     "(pip install 'convlens[ray]'); the numbers are the same.")(g))


def palette_option(f: F) -> F:
    return click.option(
        "--palette",
        type=click.Choice(["default", "gray"]),
        default="default",
        show_default=True,
        help="default: colour-blind-safe palettes; gray: grayscale.",
    )(f)


def out_option(default: str | None = None) -> Callable[[F], F]:
    """``--out DIR`` for the figures, and ``--force`` (alias ``--overwrite``) to replace
    figures of the same name; the command receives ``out`` and ``force``."""

    def deco(f: F) -> F:
        f = force_option(f)
        return click.option(
            "--out",
            type=click.Path(path_type=Path),
            default=default,
            help="Directory to write the figures into." + (f" [default: {default}]" if default else " [default: the run directory's figures/]"),
        )(f)

    return deco


def force_option(f: F) -> F:
    """``--force`` / ``--overwrite``: the one switch that lets a command replace what an
    earlier command wrote (a run, a demo output, figures of the same name, a dump). Files
    convlens did not write are never replaced, with or without it."""
    return click.option("--force", "--overwrite", "force", is_flag=True,
                        help="Replace an earlier output of the same name (never files convlens did not write).")(f)


def figures_dest(handle: ModelHandle | None, out: Path | None, stems: list[str], force: bool,
                 extra: tuple[str, ...] = (), files: tuple[str, ...] = ()) -> Path:
    """Where the figures ``stems`` go (``--out``, else RUN/figures, else ./figures),
    checked before the work: writable, and (without ``--force``) none of them there yet."""
    from convlens.viz.figure import check_figures

    dest = handle.figures_dir(out) if handle is not None else (out if out is not None else Path("figures"))
    if out is None and handle is not None and handle.path is not None:
        fix = "give --out DIR to write the figures elsewhere"
    else:
        fix = "choose another --out"
    check_figures(dest, stems, overwrite=force, extra=extra, files=files, fix=fix)
    return dest


# --- which input ---------------------------------------------------------------------------------


class LabelType(click.ParamType):
    """A class given on the command line: ``7`` is label 7, any other text a class name."""

    name = "CLASS"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        text = str(value).strip()
        return int(text) if text.isdigit() else text


@dataclass(frozen=True)
class Inputs:
    """What the input options said (see :func:`input_options`)."""

    digit: int | str | None
    index: int | None
    image: Path | None
    nth: int
    split: str
    matrix: str | None = None

    def choice(self) -> dict[str, Any]:
        """Keyword arguments for :func:`convlens.views.choose_input`."""
        return {"digit": self.digit, "index": self.index, "image": self.image, "nth": self.nth, "split": self.split}

    def slug(self) -> str:
        """The input as a figure names it: ``test-digit7``, ``test-digit7-nth2``,
        ``train-index12``, ``image-cat``, ``matrix-1a2b3c`` ("" when none was given)."""
        import hashlib

        if self.image is not None:
            return f"image-{self.image.stem}"
        if self.matrix is not None:
            return "matrix-" + hashlib.sha256(self.matrix.encode()).hexdigest()[:6]
        if self.index is not None:
            return f"{self.split}-index{self.index}"
        if self.digit is not None:
            return f"{self.split}-digit{self.digit}" + (f"-nth{self.nth}" if self.nth else "")
        return ""


def input_options(*, matrix: bool = False) -> Callable[[F], F]:
    """``--digit/--index/--image/--nth/--split`` (and ``--matrix`` with ``matrix=True``);
    the command receives them as one ``inputs: Inputs`` argument."""

    def deco(f: F) -> F:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            given = Inputs(kwargs.pop("digit"), kwargs.pop("index"), kwargs.pop("image"), kwargs.pop("nth"),
                           kwargs.pop("split"), kwargs.pop("matrix", None))
            return f(*args, inputs=given, **kwargs)

        if matrix:
            command = click.option("--matrix", default=None, metavar="ROWS",
                                   help='A small input written as rows, e.g. "1,2,3;4,5,6;7,8,9".')(command)
        for option in (
            click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
                         help="The split --digit and --index read."),
            click.option("--nth", type=click.IntRange(min=0), default=0, show_default=True,
                         help="With --digit: take the nth example of that class (0 is the first)."),
            click.option("--image", type=click.Path(path_type=Path), default=None, help="Use this image file."),
            click.option("--index", type=int, default=None, help="Use this example of the split."),
            click.option("--digit", type=LabelType(), default=None,
                         help="Use the first example of this class in the split (e.g. 7)."),
        ):
            command = option(command)
        return cast(F, command)

    return deco


# --- explanation methods, from the registry ------------------------------------------------------


class MethodName(click.ParamType):
    """A name in :data:`convlens.explain.METHODS`, looked up when the command runs (so
    ``convlens --help`` imports no torch, and a method registered later is accepted)."""

    name = "METHOD"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from convlens.explain import get_method

        return get_method(str(value).strip()).name  # unknown: a ConvlensError naming the nearest

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        from convlens.explain import METHODS

        return [CompletionItem(n) for n in METHODS if n.startswith(incomplete)]


def _needs(cls: Any) -> str:
    words = ["a layer" if cls.needs_layer else "no layer", "gradients" if cls.uses_gradients else "no gradients"]
    if cls.perturbation:
        words.append("perturbed inputs")
    return ", ".join(words)


class MethodsCommand(click.Command):
    """A command whose help ends with the registered methods, one row each (generated
    from :data:`convlens.explain.METHODS` when the help is shown)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from convlens.explain import METHODS

        with formatter.section("Methods (for --method and --methods)"):
            formatter.write_dl([(name, f"{cls.title}: {_needs(cls)}") for name, cls in METHODS.items()])
        super().format_epilog(ctx, formatter)


def method_option(f: F) -> F:
    return click.option("--method", type=MethodName(), default="gradcam", show_default=True,
                        help="One method (see Methods below; --methods for several).")(f)


# --- models --------------------------------------------------------------------------------------


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def print_written(paths: dict[str, Path], what: str) -> None:
    console().print(f"{what}: [bold]{paths['png']}[/] (+ .svg, .json)")


_NORMALISATION = "convlens.normalisation"


def model_source(f: F) -> F:
    """RUN (a run directory) or --model module:factory [--weights FILE] for any nn.Module,
    with --mean/--std (the normalisation of a --model's inputs, kept in the click context
    for :func:`open_source`, so the commands' signatures do not carry them)."""

    inner = f

    @functools.wraps(inner)
    def command(*args: Any, **kwargs: Any) -> Any:
        click.get_current_context().meta[_NORMALISATION] = (kwargs.pop("mean"), kwargs.pop("std"))
        return inner(*args, **kwargs)

    f = cast(F, command)
    f = click.option("--std", default=None, metavar="S[,S,...]",
                     help="With --model: the std its inputs were normalised with (one value, or one per "
                          "channel) [default: the dataset's].")(f)
    f = click.option("--mean", default=None, metavar="M[,M,...]",
                     help="With --model: the mean its inputs were normalised with (pixels scaled to 0..1; one "
                          "value, or one per channel) [default: the dataset's].")(f)
    f = click.option("--input-shape", default=None, metavar="C,H,W",
                     help="With --model: the shape of one input [default: the dataset's, 1,28,28]; "
                          "data and images are fitted to it.")(f)
    f = click.option("--dataset", default="mnist", show_default=True,
                     help="With --model: the dataset the model reads (for inputs and normalisation): mnist, "
                          "fashion-mnist, kmnist, cifar10, cifar100, folder:PATH or npz:PATH (a run records its own).")(f)
    f = click.option("--weights", type=click.Path(path_type=Path), default=None,
                     help="With --model: a state dict (.pt/.pth read with weights_only=True, or .safetensors).")(f)
    f = click.option("--model", "spec", default=None, metavar="MODULE:FACTORY",
                     help="Your own model instead of RUN: a factory importable as package.module:function.")(f)
    return click.argument("run", type=click.Path(path_type=Path), required=False)(f)


def open_source(run: Path | None, spec: str | None, weights: Path | None, dataset: str,
                input_shape: str | None, device: str = "cpu", *, arch: str | None = None) -> ModelHandle:
    """The model of RUN, --model or --arch, on ``device`` (``auto``: cuda, then mps, then cpu);
    a note on stderr when a --model has no --weights."""
    from convlens.models.handle import open_model
    from convlens.train.device import resolve_device

    ctx = click.get_current_context(silent=True)
    mean, std = ctx.meta.get(_NORMALISATION, (None, None)) if ctx is not None else (None, None)
    handle = open_model(run, spec=spec, weights=weights, input_shape=input_shape, dataset=dataset,
                        device=str(resolve_device(device)), mean=mean, std=std, arch=arch)
    if handle.random_weights and spec is not None:
        import warnings

        from convlens.errors import ConvlensNote

        warnings.warn(ConvlensNote(f"--model {spec} without --weights: the model has the random weights its factory "
                                   "gave it, so what convlens shows is untrained; pass --weights FILE for trained "
                                   "ones"), stacklevel=2)
    return handle


def parse_channels(text: str | None) -> list[int] | None:
    """``--channels "0-7,12"`` -> [0, 1, ..., 7, 12]."""
    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise click.BadParameter(f"{text!r}: use channel numbers and ranges like 0-7,12", param_hint="--channels") from None
    if not out:
        raise click.BadParameter("no channels given", param_hint="--channels")
    return out
