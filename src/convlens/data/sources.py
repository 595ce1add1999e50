"""Where datasets come from: a registry of sources, downloads verified by checksum,
or a directory the user already has.

Three ways to get the four IDX files of a dataset, in this order:

1. ``data_dir=`` (the command line's ``--data-dir DIR``): use the files in that
   directory, nothing is downloaded.
2. The environment variable ``CONVLENS_DATA_DIR``: the same, for every command.
3. Otherwise download them with pooch into the user cache (``CONVLENS_CACHE_DIR``
   if set, else the platform cache from ``pooch.os_cache("convlens")``), one
   sub-folder per dataset, each file verified against its published checksum.
   ``CONVLENS_MIRROR`` (or ``base_url=``) replaces the source's URLs by one base
   URL; ``{name}`` in it is replaced by the dataset name.

>>> sorted(SOURCES)
['fashion-mnist', 'kmnist', 'mnist']
>>> SOURCES["mnist"].classes[7]
'7'
"""

from __future__ import annotations

import contextlib
import ftplib
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from convlens.errors import DataError, DownloadError, unknown_name

__all__ = [
    "ENV_CACHE_DIR",
    "ENV_DATA_DIR",
    "ENV_MIRROR",
    "FILE_KEYS",
    "SOURCES",
    "STANDARD_FILES",
    "Located",
    "Source",
    "cache_dir",
    "download",
    "get_source",
    "locate",
    "resolve_files",
]

ENV_DATA_DIR = "CONVLENS_DATA_DIR"
ENV_CACHE_DIR = "CONVLENS_CACHE_DIR"
ENV_MIRROR = "CONVLENS_MIRROR"

#: The four files of an MNIST-style dataset, by role.
FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
STANDARD_FILES: Mapping[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class Source:
    """A dataset in the IDX layout that convlens can download or find on disk.

    Attributes:
        name: registry key and cache sub-folder (``"mnist"``).
        title: human name (``"MNIST"``).
        classes: class names, indexed by label.
        urls: base URLs tried in order; a file's URL is ``base + file name``.
        checksums: file name -> ``"md5:<hex>"`` (or ``sha256:``), the published hash.
            A file without one is never downloaded (:class:`DownloadError`).
        mean, std: per-channel normalisation constants for pixels scaled to [0, 1];
            ``None`` means "compute them from the training images when loading".
        files: role (one of :data:`FILE_KEYS`) -> file name.
        label_kind: what one label is called in messages ("digit", "class").
        folders: extra sub-folders of a data directory to search (e.g. torchvision's
            ``MNIST/raw``), after ``DIR/<name>`` and before ``DIR`` itself.
        homepage: where the dataset is described.
        pixel_mean: the published mean pixel (scaled to [0, 1]) of the training images,
            which tells the dataset's files from the others' (:mod:`convlens.data.fingerprint`).
    """

    name: str
    title: str
    classes: tuple[str, ...]
    urls: tuple[str, ...]
    checksums: Mapping[str, str]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    files: Mapping[str, str] = field(default_factory=lambda: dict(STANDARD_FILES))
    label_kind: str = "class"
    folders: tuple[str, ...] = ()
    homepage: str = ""
    pixel_mean: float | None = None

    def checksum(self, filename: str) -> str | None:
        """The published ``alg:hex`` hash of ``filename``, or None if there is none."""
        return self.checksums.get(filename)


SOURCES: dict[str, Source] = {
    "mnist": Source(
        name="mnist",
        title="MNIST",
        classes=tuple(str(d) for d in range(10)),
        # The ossci mirror is the one torchvision tries first; LeCun's original site
        # is often unavailable.
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        # md5s as published by torchvision (pytorch/vision,
        # torchvision/datasets/mnist.py, MNIST.resources) for these mirrors.
        checksums={
            "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
        },
        # The well-known MNIST training-set statistics (mean 0.1307, std 0.3081), used
        # by the PyTorch MNIST example and the tutorial convlens grew from.
        mean=(0.1307,),
        std=(0.3081,),
        label_kind="digit",
        folders=("MNIST/raw",),
        homepage="http://yann.lecun.com/exdb/mnist/",
        pixel_mean=0.1307,
    ),
    "fashion-mnist": Source(
        name="fashion-mnist",
        title="Fashion-MNIST",
        # Label order from the Fashion-MNIST README (zalandoresearch/fashion-mnist).
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        # md5s from the "Get the Data" table of the Fashion-MNIST README
        # (github.com/zalandoresearch/fashion-mnist).
        checksums={
            "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
        },
        # Training-set statistics as computed and published by
        # github.com/chatflip/CalculationMeanStd (FashionMNIST(train): 0.2860, 0.3530),
        # the values in common use.
        mean=(0.2860,),
        std=(0.3530,),
        label_kind="class",
        folders=("FashionMNIST/raw",),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        pixel_mean=0.2860,
    ),
    "kmnist": Source(
        name="kmnist",
        title="Kuzushiji-MNIST",
        # Romanised hiragana, label order of kmnist_classmap.csv (rois-codh/kmnist):
        # お き す つ な は ま や れ を.
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        urls=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        # The authors' README (github.com/rois-codh/kmnist) links the files but
        # publishes no checksums. These md5s are the ones torchvision publishes and
        # verifies for the same URLs (pytorch/vision, torchvision/datasets/mnist.py,
        # KMNIST.resources).
        checksums={
            "train-images-idx3-ubyte.gz": "md5:bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte.gz": "md5:e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte.gz": "md5:5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte.gz": "md5:7320c461ea6c1c855c0b718fb2a4b134",
        },
        # No agreed published values (different projects quote different numbers),
        # so they are computed from the training images when the dataset is loaded.
        mean=None,
        std=None,
        label_kind="character",
        folders=("KMNIST/raw",),
        homepage="https://github.com/rois-codh/kmnist",
        # The mean pixel of the training images is quoted alike everywhere (0.1918; the
        # std is not), so it identifies the files even though it does not normalise them.
        pixel_mean=0.1918,
    ),
}


def get_source(name: str | Source) -> Source:
    """The registered :class:`Source` called ``name`` (a Source is returned as is)."""
    if isinstance(name, Source):
        return name
    src = SOURCES.get(name)
    if src is None:
        raise DataError(unknown_name("dataset", name, SOURCES))
    return src


def cache_dir() -> Path:
    """Root of the download cache: ``CONVLENS_CACHE_DIR`` or pooch's user cache."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("convlens"))


def _env_data_dir() -> Path | None:
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env).expanduser() if env else None


@dataclass(frozen=True)
class Located:
    """Where each of a dataset's files is, and where it came from (path or URL)."""

    source: Source
    paths: dict[str, Path]
    origins: dict[str, str]


def _find_in(folder: Path, src: Source) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for key in FILE_KEYS:
        fname = src.files[key]
        names = [fname, fname.removesuffix(".gz")] if fname.endswith(".gz") else [fname, fname + ".gz"]
        for n in names:
            if (folder / n).is_file():
                found[key] = folder / n
                break
    return found


def _from_dir(src: Source, data_dir: Path, via: str) -> Located:
    if not data_dir.is_dir():
        what = "is not a directory" if data_dir.exists() else "does not exist"
        raise DataError(
            f"data directory {data_dir} ({via}) {what}; point it at a directory holding the "
            f"{src.title} IDX files, or unset it (and omit --data-dir) to download {src.title}"
        )
    candidates = [data_dir / src.name, *(data_dir / f for f in src.folders), data_dir]
    searched = [(folder, _find_in(folder, src)) for folder in candidates]
    for _folder, found in searched:
        if len(found) == len(FILE_KEYS):
            # origins are absolute: a run records them, and is read from other directories
            return Located(src, found, {k: str(p.resolve()) for k, p in found.items()})
    # Report the folder that came closest; on a tie, the directory the user named.
    folder, found = max(searched, key=lambda item: (len(item[1]), candidates.index(item[0])))
    missing = [src.files[k] for k in FILE_KEYS if k not in found]
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"{src.title} files missing in {folder} ({via}): {', '.join(missing)} (looked in {looked}; "
        f".gz optional); put the files there, point --data-dir / {ENV_DATA_DIR} at a directory that "
        f"has them, or leave both unset to download {src.title}"
    )


def locate(name: str | Source, data_dir: str | os.PathLike[str] | None = None, *,
           base_url: str | None = None) -> Located:
    """Like :func:`resolve_files`, and also says where each file came from."""
    src = get_source(name)
    if data_dir is not None:
        return _from_dir(src, Path(data_dir).expanduser(), "--data-dir")
    env = _env_data_dir()
    if env is not None:
        return _from_dir(src, env, ENV_DATA_DIR)
    paths, urls = _download(src, base_url=base_url, root=None)
    return Located(src, paths, urls)


def resolve_files(name: str | Source, data_dir: str | os.PathLike[str] | None = None, *,
                  base_url: str | None = None) -> dict[str, Path]:
    """Paths of the four IDX files of dataset ``name``, keyed by :data:`FILE_KEYS`.

    With ``data_dir``, look in ``data_dir/<name>/``, then the source's extra folders
    (e.g. ``data_dir/MNIST/raw``), then ``data_dir`` itself, for the four files with or
    without ``.gz``; all four must be in the same directory. Nothing is downloaded.
    Without it, use ``CONVLENS_DATA_DIR`` the same way if set, else :func:`download`.

    Raises:
        DataError: files are missing (the message lists them and says how to fix it).
        DownloadError: a download failed or did not match its checksum.
    """
    return locate(name, data_dir, base_url=base_url).paths


def _base_urls(src: Source, base_url: str | None) -> tuple[str, ...]:
    override = base_url or os.environ.get(ENV_MIRROR)
    bases = (override.replace("{name}", src.name),) if override else src.urls
    return tuple(b if b.endswith("/") else b + "/" for b in bases)


def _short(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code} {getattr(response, 'reason', '') or ''}".strip()
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    name = type(exc).__name__
    if "Timeout" in name:
        return "timed out"
    if name == "ConnectionError":  # requests: dig out the OS reason, e.g. "Connection refused"
        errno = re.search(r"\[Errno -?\d+\] ([^'\"()\]]+)", text)
        return "connection failed: " + (errno.group(1).strip() if errno else "no route to the server")
    return text if len(text) <= 160 else text[:157] + "..."


def _fetch(src: Source, fname: str, folder: Path, bases: tuple[str, ...]) -> tuple[Path, str]:
    import pooch

    known = src.checksum(fname)
    if known is None:
        raise DownloadError(
            f"{src.title} file {fname} has no published checksum, so convlens will not download it "
            f"unverified; fetch it yourself and pass --data-dir DIR (or set {ENV_DATA_DIR})"
        )
    alg, _, expected = known.partition(":")
    if not expected:
        alg, expected = "sha256", known
    alg, expected = alg.lower(), expected.lower()
    target = folder / fname
    if target.is_file() and pooch.file_hash(str(target), alg=alg) == expected:
        return target, bases[0] + fname
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import tqdm  # noqa: F401

        progress = sys.stderr.isatty()
    except ImportError:
        progress = False
    failures: list[str] = []
    mismatch: str | None = None
    for base in bases:
        url = base + fname
        fd, tmp = tempfile.mkstemp(prefix=f".{fname}.", suffix=".part", dir=folder)
        os.close(fd)
        try:
            try:
                downloader = pooch.downloaders.choose_downloader(url, progressbar=progress)
                downloader(url, tmp, None)
            except (OSError, ValueError, EOFError, ftplib.Error) as exc:  # requests' errors are OSErrors
                failures.append(f"{url} ({_short(exc)})")
                continue
            actual = pooch.file_hash(tmp, alg=alg)
            if actual != expected:
                mismatch = (
                    f"checksum mismatch for {src.title} file {fname} from {url}: expected {alg} "
                    f"{expected}, got {actual}; the download was deleted. Try again later, set "
                    f"{ENV_MIRROR} to another mirror, or pass --data-dir DIR with a verified copy"
                )
                continue
            os.replace(tmp, target)
            return target, url
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    if mismatch is not None:
        raise DownloadError(mismatch)
    raise DownloadError(
        f"could not download {src.title} file {fname} from {' or '.join(failures)}; to use an offline "
        f"copy, pass --data-dir DIR or set {ENV_DATA_DIR} to a directory holding the four IDX files"
    )


def _download(src: Source, *, base_url: str | None, root: str | os.PathLike[str] | None
              ) -> tuple[dict[str, Path], dict[str, str]]:
    folder = (Path(root) if root is not None else cache_dir()) / src.name
    bases = _base_urls(src, base_url)
    paths: dict[str, Path] = {}
    urls: dict[str, str] = {}
    for key in FILE_KEYS:
        paths[key], urls[key] = _fetch(src, src.files[key], folder, bases)
    return paths, urls


def download(name: str | Source, *, base_url: str | None = None,
             cache: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Download (or find already cached) the four files of ``name``; return their paths.

    Files go to ``<cache>/<name>/`` (``cache`` defaults to :func:`cache_dir`). A cached
    file is used if its hash matches. Each download is streamed to a temporary file in
    that folder, checked against the published checksum and only then renamed into
    place; on a mismatch or any failure the temporary file is removed, so the cache
    never holds an unverified file.

    Raises:
        DownloadError: no published checksum, the network failed on every URL, or the
            checksum did not match.
    """
    return _download(get_source(name), base_url=base_url, root=cache)[0]
