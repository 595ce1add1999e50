"""Atomic writes: a reader never sees a half-written file or directory.

Every output convlens writes (run directories, figures, activation dumps, the demo)
goes through this module, and gets the permissions a plain ``mkdir`` or ``open`` would
give it: the temporary directory is made with mode ``0o777`` and the temporary file
with ``0o666``, both reduced by the process umask (``tempfile.mkdtemp`` and
``mkstemp`` would make them private, ``0o700`` and ``0o600``). The umask is never
read or changed, so threads writing at the same time cannot disturb each other.

It also holds the one output policy every command follows:

* :func:`ensure_writable` probes the place an output goes *before* the work starts;
* :func:`claim` takes an exclusive lock beside a target, so a second process writing
  the same run fails at once with one clear line instead of silently winning;
* :func:`check_replaceable` refuses to replace an existing output unless asked
  (``overwrite``, the CLI's ``--force``), and never replaces a directory that holds
  files convlens did not write (:func:`foreign_entries`);
* :func:`write_files` writes a set of files (a figure's PNG, SVG and JSON) completely
  or not at all.

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
import errno
import json
import os
import re
import secrets
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from convlens.errors import OutputError


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

    def __init__(self, target: str | os.PathLike[str], *, overwrite: bool = True, fix: str = "choose another --out") -> None:
        self.target = Path(target).resolve()
        self.overwrite = overwrite
        ensure_writable(self.target.parent, fix=fix)  # one clear line, not a PermissionError on a hidden name
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


def _temp_fd(target: Path) -> tuple[int, Path]:
    """A new hidden file beside ``target``, open for writing: ``(fd, path)``."""
    for name in _unique(target.parent, f"{target.name}.", ".tmp"):
        try:
            # O_EXCL: never reuse a file someone else made; 0o666 less the umask, as open() gives
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return fd, name
    raise AssertionError("unreachable: _unique raises when it runs out of names")


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``target`` for binary writing; rename it over
    ``target`` on success, remove it on failure."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = _temp_fd(target)
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


# --- the output policy ---------------------------------------------------------------------------

#: What the error lines suggest when an output's place is unusable.
CHOOSE_OUT = "choose another --out"


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def ensure_writable(directory: str | os.PathLike[str], *, fix: str = CHOOSE_OUT) -> Path:
    """Check that files can be created in ``directory`` (or, if it does not exist yet, in
    its nearest existing ancestor) by creating and removing a probe file; nothing else is
    created. Raises :class:`~convlens.errors.OutputError` naming the place and ``fix``.

    Called before the work starts, so a long computation never ends in a failed save.
    """
    d = Path(directory)
    base = _nearest_existing(d.absolute())
    if not base.is_dir():
        raise OutputError(f"cannot write into {d}: {base} is a file, not a directory; {fix}")
    probe = base / f".convlens-probe.{secrets.token_hex(6)}.tmp"  # a name _OURS knows
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        reason = ("permission denied" if isinstance(exc, PermissionError)
                  else "the file system is read-only" if exc.errno == errno.EROFS else exc.strerror or str(exc))
        where = str(d) if base == d.absolute() else f"{d} (its parent {base})"
        raise OutputError(f"cannot write into {where}: {reason}; {fix}") from None
    os.unlink(probe)
    return d


def _lock_name(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


_held = threading.local()  # paths this thread has claimed (a claim is re-entrant in its thread)


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - Windows: one byte locked with msvcrt
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _locked(lock: Path, take: Callable[[int], bool]) -> int | None:
    """Open ``lock`` and lock it with ``take(fd)``: the open, locked descriptor, or None if
    ``take`` said no. The holder removes the file before it unlocks, so a file we locked
    that no longer stands at ``lock`` is a stale one: open the new one and try again."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        if not take(fd):
            os.close(fd)
            return None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _holder(lock: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(lock.read_text().split()[0])
        return f" (pid {pid})"
    return ""


@contextlib.contextmanager
def claim(target: str | os.PathLike[str], *, fix: str = CHOOSE_OUT) -> Iterator[Path]:
    """Hold an exclusive claim on ``target`` (a run directory, a demo output) for the block.

    The claim is a lock on a hidden file beside ``target`` (``.NAME.lock``), taken
    without waiting: while one process holds it, a second gets an
    :class:`~convlens.errors.OutputError` at once ("being written by another convlens
    process (pid N)"). The operating system releases the lock if the holder dies, so a
    crash never leaves a stale claim; the lock file is removed when the block ends.
    Claiming a path this thread already holds is a no-op (train inside train_run).
    """
    path = Path(target).absolute()
    held: set[Path] = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield path
        return
    ensure_writable(path.parent, fix=fix)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_name(path)
    fd = _locked(lock, _try_lock)
    if fd is None:
        raise OutputError(
            f"{target} is being written by another convlens process{_holder(lock)}; "
            f"wait for it to finish, or {fix}"
        )
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        held.add(path)
        yield path
    finally:
        held.discard(path)
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still locked: a waiter sees a different (or no) file and retries
        os.close(fd)


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """A short exclusive lock on ``directory`` for committing files into it (waits)."""
    if sys.platform == "win32":  # pragma: no cover - claims still lock; commits just go in order
        yield
        return
    import fcntl

    def wait(fd: int) -> bool:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True

    lock = directory / ".convlens-commit.lock"
    fd = _locked(lock, wait)
    assert fd is not None  # wait() always takes the lock; for mypy
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


# Hidden names convlens itself makes beside its outputs (temporary files, partial and
# replaced directories, locks): never the user's.
_OURS = re.compile(r"^\..+\.(?:[0-9a-f]{12}\.tmp|(?:partial|old)-[0-9a-f]{12}|lock)$")
_MAX_SIDECAR = 4 * 2**20


def _listed(sidecar: Path) -> set[str]:
    """Names a convlens manifest or sidecar says convlens wrote beside it (with itself)."""
    try:
        if sidecar.stat().st_size > _MAX_SIDECAR:
            return set()
        d = json.loads(sidecar.read_bytes())
    except (OSError, ValueError):
        return set()
    if not isinstance(d, dict):
        return set()
    names: list[object] = []
    if d.get("software") == "convlens" and isinstance(d.get("files"), list):
        names = list(d["files"])  # figure sidecars
    elif d.get("kind") == "convlens-demo":
        names = [d.get("index")]
    elif d.get("format") == "convlens-activations" and isinstance(d.get("layers"), dict):
        names = [s.get("file") for layer in d["layers"].values() if isinstance(layer, dict)
                 for s in layer.get("shards", []) if isinstance(s, dict)]
    elif "caption" in d and "alt" in d:  # sidecars of earlier versions
        names = [d.get(k) for k in ("png", "svg", "gif")]
    else:
        return set()
    return {sidecar.name} | {n for n in names if isinstance(n, str) and "/" not in n and "\\" not in n}


def foreign_entries(root: str | os.PathLike[str], known: Iterable[str] = ()) -> list[str]:
    """Paths under ``root`` (relative, ``/``-separated) that convlens did not write.

    Convlens's own are: the ``known`` relative paths (a run's fixed files), every file a
    convlens sidecar or manifest in the same directory lists (figures, activation dumps,
    the demo page), and convlens's hidden temporary and lock files. A symbolic link, or an
    empty directory not in ``known``, is the user's.
    """
    ours = set(known)
    found: list[str] = []

    def walk(d: Path, rel: str) -> None:
        entries = sorted(d.iterdir())
        listed: set[str] = set()
        for e in entries:
            if e.suffix == ".json" and e.is_file() and not e.is_symlink():
                listed |= _listed(e)
        if not entries and rel and rel not in ours:
            found.append(rel + "/")
        for e in entries:
            r = f"{rel}/{e.name}" if rel else e.name
            if e.is_symlink():
                found.append(r)
            elif e.is_dir():
                walk(e, r)
            elif r not in ours and e.name not in listed and not _OURS.match(e.name):
                found.append(r)

    walk(Path(root), "")
    return found


def _listing(paths: list[str], limit: int = 3) -> str:
    return ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def check_replaceable(target: str | os.PathLike[str], *, overwrite: bool, what: str,
                      known: Iterable[str] = (), fix: str = CHOOSE_OUT) -> None:
    """The policy for an output directory (a run, a demo output, a dump) about to be written.

    Nothing there, or an empty directory: fine. A file: refused. A directory holding
    anything convlens did not write (see :func:`foreign_entries`): refused, even with
    ``overwrite`` (convlens never deletes what it did not write). Otherwise an earlier
    output: refused unless ``overwrite``. ``what`` names the output in the message
    ("run", "demo output").
    """
    p = Path(target)
    if not p.exists() and not p.is_symlink():
        return
    if p.is_symlink() or not p.is_dir():
        raise OutputError(f"{p} exists and is not a directory; {fix}")
    try:
        foreign = foreign_entries(p, known)
    except OSError as exc:
        raise OutputError(f"cannot read {p} to check what it holds: {exc.strerror or exc}; {fix}") from None
    if foreign:
        raise OutputError(
            f"{p} holds files convlens did not write ({_listing(foreign)}); it is never replaced while they "
            f"are there: move them elsewhere, or {fix}"
        )
    if not overwrite and any(p.iterdir()):
        raise OutputError(f"{p} already holds a convlens {what}; add --force to replace it, or {fix}")


def existing(directory: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Those of ``names`` that already exist in ``directory``."""
    d = Path(directory)
    return [d / n for n in names if (d / n).exists() or (d / n).is_symlink()]


def refuse_existing(directory: str | os.PathLike[str], names: Iterable[str], *, fix: str = CHOOSE_OUT) -> None:
    """:class:`~convlens.errors.OutputError` if any of ``names`` exists in ``directory``."""
    there = existing(directory, names)
    if there:
        shown = _listing([str(p) for p in there])
        verb = "exists" if len(there) == 1 else "exist"
        raise OutputError(f"{shown} already {verb}; add --force to replace, or {fix}")


def write_files(directory: str | os.PathLike[str], files: Mapping[str, bytes], *, overwrite: bool = False,
                fix: str = CHOOSE_OUT) -> dict[str, Path]:
    """Write ``files`` (name -> content) into ``directory``: all of them or none.

    Every file is first written to a hidden temporary name; then, under a short lock on
    the directory, the set is checked (without ``overwrite`` none of the names may exist:
    a concurrent writer of the same set loses with an :class:`~convlens.errors.OutputError`)
    and moved into place in the order given, so list the sidecar that describes the set
    last. If anything fails (Ctrl-C included) the files already moved are taken back and
    the earlier versions restored. Returns the paths by name.
    """
    d = Path(directory)
    ensure_writable(d, fix=fix)
    d.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        for name, data in files.items():
            fd, tmp = _temp_fd(d / name)
            temps[name] = tmp
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        with _dir_lock(d):
            if not overwrite:
                refuse_existing(d, files, fix=fix)
            _move_all(d, temps)
    finally:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return {name: d / name for name in files}


def _move_all(d: Path, temps: dict[str, Path]) -> None:
    """Rename each temporary file over its target; on failure undo every rename."""
    done: list[tuple[Path, Path | None]] = []  # (target, backup of what it replaced)
    try:
        for name, tmp in temps.items():
            target = d / name
            backup: Path | None = None
            if target.exists():
                backup = next(p for p in _unique(d, f"{name}.", ".tmp") if not p.exists())
                try:
                    os.link(target, backup)  # keeps the old version without a moment of absence
                except OSError:
                    os.replace(target, backup)
            os.replace(tmp, target)
            done.append((target, backup))
    except BaseException:
        for target, backup in reversed(done):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, target)
                else:
                    os.unlink(target)
        raise
    for _, backup in done:
        if backup is not None:
            with contextlib.suppress(OSError):
                os.unlink(backup)
