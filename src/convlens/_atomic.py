"""Atomic writes: a reader never sees a half-written file or directory.

Every output convlens writes (run directories, figures, activation dumps, the demo)
goes through this module, and gets the permissions a plain ``mkdir`` or ``open`` would
give it: the temporary directory is made with mode ``0o777`` and the temporary file
with ``0o666``, both reduced by the process umask (``tempfile.mkdtemp`` and
``mkstemp`` would make them private, ``0o700`` and ``0o600``). The umask is never
read or changed, so threads writing at the same time cannot disturb each other.

>>> import tempfile
>>> from pathlib import Path
>>> parent = tempfile.TemporaryDirectory()
>>> out = Path(parent.name) / "result"
>>> with atomic_dir(out) as tmp:
...     _ = (tmp / "a.txt").write_text("a")
>>> sorted(p.name for p in Path(parent.name).iterdir())  # no partial directory beside it
['result']
>>> parent.cleanup()
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _unique(parent: Path, prefix: str, suffix: str = "") -> Iterator[Path]:
    """Fresh hidden names beside a target, for the caller to try in turn."""
    for _ in range(100):
        yield parent / f".{prefix}{secrets.token_hex(6)}{suffix}"
    raise FileExistsError(f"could not find a free temporary name in {parent}")


def _make_dir(parent: Path, prefix: str) -> Path:
    for path in _unique(parent, prefix):
        try:
            os.mkdir(path, 0o777)  # the umask applies, as for any mkdir
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable: _unique raises when it runs out of names")


class AtomicDir:
    """A temporary directory beside ``target`` that becomes ``target`` on :meth:`commit`.

    For writers whose work spans several calls (an activation dump written batch by
    batch during a pass); :func:`atomic_dir` is the same as a ``with`` block. Until
    :meth:`commit` nothing at ``target`` changes; :meth:`abort` removes the temporary
    directory and may be called any number of times. With ``overwrite`` an existing
    ``target`` is replaced only once the new content is complete; without it,
    :meth:`commit` refuses (``FileExistsError``) and leaves ``target`` as it was.
    """

    def __init__(self, target: str | os.PathLike[str], *, overwrite: bool = True) -> None:
        self.target = Path(target).resolve()
        self.overwrite = overwrite
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path = _make_dir(self.target.parent, f"{self.target.name}.partial-")

    def commit(self) -> Path:
        """Move the temporary directory into place; return ``target``."""
        try:
            if self.target.exists():
                if not self.overwrite:
                    raise FileExistsError(f"{self.target} already exists")
                old = next(p for p in _unique(self.target.parent, f"{self.target.name}.old-") if not p.exists())
                os.replace(self.target, old)
                os.replace(self.path, self.target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self.path, self.target)
        except BaseException:
            self.abort()
            raise
        return self.target

    def abort(self) -> None:
        """Remove the temporary directory; ``target`` is left exactly as it was."""
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; move it into place on success.

    On any exception (``KeyboardInterrupt`` included) the temporary directory is
    removed and ``target`` is left exactly as it was. See :class:`AtomicDir`.
    """
    pending = AtomicDir(target, overwrite=overwrite)
    try:
        yield pending.path
    except BaseException:
        pending.abort()
        raise
    pending.commit()


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``target`` for binary writing; rename it over
    ``target`` on success, remove it on failure."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for name in _unique(target.parent, f"{target.name}.", ".tmp"):
        try:
            # O_EXCL: never reuse a file someone else made; 0o666 less the umask, as open() gives
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        break
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_file(target) as fh:
        fh.write(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))
