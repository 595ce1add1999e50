"""The command line: parse, call the library, print.

User errors (:class:`convlens.errors.ConvlensError`) become one line on stderr and
exit code 1; Ctrl-C exits with 130; anything else is reported in one line too, with
the traceback only when ``CONVLENS_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys

import click

from convlens.cli import audit as _audit  # noqa: F401
from convlens.cli import compare as _compare  # noqa: F401
from convlens.cli import conv as _conv  # noqa: F401
from convlens.cli import core as _core  # noqa: F401  (each module attaches its commands)
from convlens.cli import diagnose as _diagnose  # noqa: F401
from convlens.cli import explain as _explain  # noqa: F401
from convlens.cli import featvis as _featvis  # noqa: F401
from convlens.cli import inspect as _inspect  # noqa: F401
from convlens.cli import report as _report  # noqa: F401
from convlens.cli import serve as _serve  # noqa: F401
from convlens.cli._app import app

__all__ = ["app", "main"]


def _debug() -> bool:
    return os.environ.get("CONVLENS_DEBUG", "") not in ("", "0", "false", "no")


#: The notes of the command running now, printed when it succeeds.
_pending: list[str] = []


def _collect_notes() -> None:
    """Collect convlens's notes (:class:`convlens.errors.ConvlensNote` warnings) as
    ``convlens: note: ...`` lines, each once, for :func:`main` to print after the command
    succeeds (a failing command prints only its error line); other warnings are shown
    as Python shows them."""
    import warnings

    from convlens.errors import ConvlensNote

    if not getattr(warnings.showwarning, "convlens_notes", False):
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: object = None, line: str | None = None) -> None:
            if issubclass(category, ConvlensNote):
                text = f"convlens: note: {message}"
                if text not in _pending:
                    _pending.append(text)
            else:
                shown(message, category, filename, lineno, file, line)  # type: ignore[arg-type]  # file: TextIO | None

        show.convlens_notes = True  # type: ignore[attr-defined]  # marks the hook as installed
        warnings.showwarning = show
    warnings.simplefilter("always", ConvlensNote)
    _pending.clear()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``convlens`` console script."""
    from convlens.errors import ConvlensError

    _collect_notes()
    args = sys.argv[1:] if argv is None else argv
    for n, arg in enumerate(args, start=1):
        if "\x00" in arg:  # no path or name holds one; os.stat would raise a bare ValueError
            click.echo(f"convlens: error: argument {n} ({arg!r}) contains a NUL byte; retype it", err=True)
            sys.exit(1)
    try:
        app.main(args=args, prog_name="convlens", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("convlens: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if _debug():
            raise
        click.echo("convlens: interrupted", err=True)
        sys.exit(130)
    except ConvlensError as exc:
        if _debug():
            raise
        click.echo(f"convlens: error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        if _debug():
            raise
        click.echo(
            f"convlens: unexpected error: {type(exc).__name__}: {exc} "
            "(set CONVLENS_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(1)
    for text in _pending:
        click.echo(text, err=True)
    sys.exit(0)
