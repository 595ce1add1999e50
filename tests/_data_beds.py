"""Small data beds for the data-source tests: image folders, CIFAR archives in the real
binary format, and a local HTTP server on 127.0.0.1 that serves them."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: Colours of the classes of :func:`colour_images`: a square of the class's colour on black.
CLASS_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def colour_images(n_per_class: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, size, size) uint8, labels (N,))``: for class k (red, green, blue) a
    square of that colour at a seeded random place on a dark, noisy background."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, rgb in enumerate(CLASS_COLOURS.values()):
        for _ in range(n_per_class):
            img = rng.integers(0, 40, (3, size, size)).astype(np.uint8)
            side = size // 3
            r, c = rng.integers(0, size - side, 2)
            img[:, r:r + side, c:c + side] = np.array(rgb, np.uint8)[:, None, None]
            images.append(img)
            labels.append(label)
    return np.stack(images), np.array(labels, np.int64)


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, classes: list[str], *,
                 fmt: str = "png") -> list[Path]:
    """Write ``images`` (N, C, H, W) as ``root/<class>/<i>.<fmt>``; the paths in order."""
    paths = []
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        d = root / classes[int(y)]
        d.mkdir(parents=True, exist_ok=True)
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        p = d / f"{i:04d}.{fmt}"
        Image.fromarray(arr).save(p, **({"lossless": True} if fmt == "webp" else {}))
        paths.append(p)
    return paths


def cifar_records(images: np.ndarray, labels: np.ndarray, coarse: np.ndarray | None = None) -> bytes:
    """The binary CIFAR records of ``images`` (N, 3, 32, 32): [coarse byte,] label byte, then
    the red, green and blue planes, each row-major (written from the format's description)."""
    out = bytearray()
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        if coarse is not None:
            out.append(int(coarse[i]))
        out.append(int(y))
        out += img[0].tobytes() + img[1].tobytes() + img[2].tobytes()
    return bytes(out)


@dataclass
class CifarBed:
    archive: Path
    md5: str
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    classes: tuple[str, ...]


def write_cifar(dest: Path, *, hundred: bool = False, per_file: int = 4, seed: int = 0,
                corrupt: str | None = None) -> CifarBed:
    """A small ``cifar-10-binary.tar.gz`` (5 training batches and a test batch of ``per_file``
    records each) or ``cifar-100-binary.tar.gz`` (train.bin, test.bin), in ``dest``.
    ``corrupt`` names a member written one byte short."""
    rng = np.random.default_rng(seed)
    n_classes = 100 if hundred else 10
    classes = tuple(f"class{i:03d}" for i in range(100)) if hundred else (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    folder = "cifar-100-binary" if hundred else "cifar-10-batches-bin"
    train_files = ["train.bin"] if hundred else [f"data_batch_{i}.bin" for i in range(1, 6)]
    test_files = ["test.bin"] if hundred else ["test_batch.bin"]
    members: dict[str, bytes] = {}
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    for split, files in (("train", train_files), ("test", test_files)):
        for f in files:
            n = per_file * (5 if hundred and split == "train" else 1)
            x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            y = rng.integers(0, n_classes, n)
            data = cifar_records(x, y, rng.integers(0, 20, n) if hundred else None)
            members[f"{folder}/{f}"] = data[:-1] if corrupt == f else data
            parts[split].append((x, y))
    names = "fine_label_names.txt" if hundred else "batches.meta.txt"
    members[f"{folder}/{names}"] = ("\n".join(classes) + "\n\n").encode()
    if hundred:
        members[f"{folder}/coarse_label_names.txt"] = "\n".join(f"super{i}" for i in range(20)).encode()
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / ("cifar-100-binary.tar.gz" if hundred else "cifar-10-binary.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    md5 = hashlib.md5(archive.read_bytes(), usedforsecurity=False).hexdigest()

    def joined(split: str) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([p[0] for p in parts[split]]), np.concatenate([p[1] for p in parts[split]])

    return CifarBed(archive, md5, joined("train"), joined("test"), classes)


@dataclass
class Server:
    root: Path
    url: str
    requests: list[str]


class _Handler(http.server.SimpleHTTPRequestHandler):
    log: list[str]

    def do_GET(self) -> None:
        self.log.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


def serve(root: Path) -> Iterator[Server]:
    """Serve ``root`` on 127.0.0.1 (a generator for a fixture)."""
    root.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    handler = type("Handler", (_Handler,), {"log": log})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield Server(root, f"http://127.0.0.1:{httpd.server_address[1]}/", log)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
