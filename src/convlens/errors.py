"""User-facing errors.

Every error a user can cause (missing data, a corrupt file, an unknown layer, a bad
argument) is a :class:`ConvlensError`. Its message is one line that names the problem
and the fix. The command line prints exactly that line and exits non-zero; the Python
API raises it. Subclasses also derive from the matching built-in exception so that
``except ValueError`` keeps working for library users.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConvlensError(Exception):
    """Base class of every error caused by the user's input or environment."""


class DataError(ConvlensError):
    """Data is missing, corrupt or does not contain what was asked for."""


class IDXError(DataError, ValueError):
    """An IDX file is malformed. The message names the file."""


class DownloadError(DataError):
    """A download failed or did not match its published checksum."""


class LayerError(ConvlensError, KeyError):
    """A layer name does not exist in the model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(ConvlensError, ValueError):
    """A model, training or figure configuration is impossible."""


class RunError(ConvlensError):
    """A run directory is missing, incomplete or unreadable."""


class OutputError(ConvlensError, OSError):
    """An output cannot be written: it exists (and replacing it was not asked for), it
    holds files convlens did not write, another process is writing it, or its place is
    not writable. The message names the path and the fix."""

    def __str__(self) -> str:  # OSError would format (errno, strerror) pairs
        return str(self.args[0]) if self.args else ""


class ImageError(ConvlensError, ValueError):
    """A user image could not be read."""


class ConvlensNote(UserWarning):
    """Something the user should know that is not an error (e.g. data that could not be
    checked); the command line prints it as one ``convlens: note: ...`` line, once."""


def unknown_name(kind: str, name: str, valid: Iterable[str], *, limit: int = 12) -> str:
    """Message for an unknown name: the nearest valid names first, then the rest."""
    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    listed = ", ".join(valid[:limit]) + (f", ... ({len(valid)} in all)" if len(valid) > limit else "")
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return f"unknown {kind} {name!r}: {hint}valid names are {listed}"


def positive_int(name: str, value: object) -> int:
    """``value`` as an ``int`` if it is a positive integer (not a bool), else a ConfigError.

    The one check for every count a user gives (``batch_size``, ``k``, ``steps``, ...).

    >>> positive_int("k", 3)
    3
    >>> positive_int("k", 0)
    Traceback (most recent call last):
    ...
    convlens.errors.ConfigError: k must be a positive integer, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
