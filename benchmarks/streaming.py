"""Peak memory of streaming an image folder: flat in the number of images.

Acceptance (issue 15): streaming a generated folder of 20,000 small PNGs keeps peak memory
below 300 MB over the model's own, and flat (±10%) between 5,000 and 20,000 images.

The script writes 20,000 PNGs of 32×32 RGB pixels (10 classes: a coloured square at a
random place on noise) and a second folder holding 5,000 of them (hard links). For each
folder a fresh subprocess (so nothing of one measurement is left in the other) imports
torch and convlens, builds seed-cnn for 3×32×32 inputs, runs one warm-up forward pass
and takes its resident set size (RSS, /proc/self/statm) as the baseline: the model's
own. It then loads both splits streamed (``stream=True``, an empty cache, so the first
load indexes the folder: it reads every image once) and runs ``channel_stats`` and
``topk_examples`` (k=9, crops kept) over conv1 and conv2 on all images. RSS is sampled
every millisecond during each phase (benchmarks/memory.py's sampler); the figure is the
sampled peak minus the baseline. The ratio printed is that figure at 20,000 images over
the one at 5,000, measured in the same run.

Run:  python benchmarks/streaming.py [--root DIR] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import allocator
from memory import PeakSampler, rss_bytes

LIMIT_MB = 300.0
SIZES = (5_000, 20_000)
CLASSES = 10


def make_folder(root: Path, n: int, seed: int = 0) -> None:
    """``n`` PNGs, ``n // CLASSES`` per class, in ``root/class<k>/``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(60, 256, (CLASSES, 3))
    for k in range(CLASSES):
        d = root / f"class{k}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n // CLASSES):
            img = rng.integers(0, 50, (32, 32, 3), dtype=np.uint8)
            r, c = rng.integers(0, 22, 2)
            img[r:r + 10, c:c + 10] = colours[k]
            Image.fromarray(img).save(d / f"{i:05d}.png")


def link_folder(src: Path, dest: Path, n: int) -> None:
    """``dest`` holds the first ``n // CLASSES`` images of each class of ``src`` (hard links)."""
    for k in range(CLASSES):
        (dest / f"class{k}").mkdir(parents=True, exist_ok=True)
        for i in range(n // CLASSES):
            os.link(src / f"class{k}" / f"{i:05d}.png", dest / f"class{k}" / f"{i:05d}.png")


def measure(root: Path, batch_size: int = 256) -> dict[str, Any]:
    """In this process: the baseline, then the peak RSS of each streamed phase."""
    import torch

    import convlens
    from convlens.inspect import channel_stats, topk_examples

    torch.manual_seed(0)
    model = convlens.build_model("seed-cnn", in_channels=3, input_size=(32, 32)).eval()
    with torch.no_grad():  # warm up torch's kernels and allocator before the baseline
        model(torch.zeros(batch_size, 3, 32, 32))
    base = rss_bytes()  # the model's own
    # the passes' own working memory (float64 statistics of a batch, top-k crops), on one
    # in-memory batch: what any data needs, so the data-dependent part is measured above it
    warm = torch.randn(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    channel_stats(model, warm, ["conv1", "conv2"], batch_size=batch_size, progress=False)
    topk_examples(model, warm, ["conv1", "conv2"], k=9, batch_size=batch_size, progress=False)
    warmed = rss_bytes()
    phases: dict[str, Any] = {}
    t0 = time.perf_counter()
    with PeakSampler() as s:
        train = convlens.load_dataset(f"folder:{root}", "train", stream=True)
        test = convlens.load_dataset(f"folder:{root}", "test", stream=True)
    phases["index + load"] = (time.perf_counter() - t0, s.peak, s.start)
    n = len(train) + len(test)

    def everything() -> Any:
        return itertools.chain(train.batches(batch_size), test.batches(batch_size))

    runs = {
        "channel_stats": lambda: channel_stats(model, everything(), ["conv1", "conv2"], batch_size=batch_size,
                                               progress=False),
        "topk_examples k=9": lambda: topk_examples(model, everything(), ["conv1", "conv2"], k=9,
                                                   batch_size=batch_size, progress=False),
    }
    counted = {}
    for name, run in runs.items():
        t0 = time.perf_counter()
        with PeakSampler() as s:
            out = run()
        phases[name] = (time.perf_counter() - t0, s.peak, s.start)
        counted[name] = out.n_inputs
    return {
        "images": n,
        "in_memory_mb": n * 3 * 32 * 32 / 2**20,
        "base_mb": base / 2**20,
        "warmed_mb": (warmed - base) / 2**20,
        "phases": {k: {"seconds": t, "above_base_mb": (p - base) / 2**20, "above_warmed_mb": (p - warmed) / 2**20,
                       "growth_mb": (p - b) / 2**20}
                   for k, (t, p, b) in phases.items()},
        "counted": counted,
        "peak_above_base_mb": max((p - base) for _, p, _ in phases.values()) / 2**20,
        "peak_above_warmed_mb": max((p - warmed) for _, p, _ in phases.values()) / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=None, help="where to write the folders [default: a temp dir]")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # the subprocess
    args = ap.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = args.root or Path(tmp)
        big = base / f"pngs-{SIZES[-1]}"
        t0 = time.perf_counter()
        if not big.exists():
            make_folder(big, SIZES[-1])
        for n in SIZES[:-1]:
            if not (base / f"pngs-{n}").exists():
                link_folder(big, base / f"pngs-{n}", n)
        made = time.perf_counter() - t0
        results = {}
        for n in SIZES:
            env = {**os.environ, "CONVLENS_CACHE_DIR": str(Path(tmp) / f"cache-{n}")}  # a cold index each time
            out = subprocess.run([sys.executable, __file__, "--measure", str(base / f"pngs-{n}")], env=env,
                                 capture_output=True, text=True, check=True)
            results[n] = json.loads(out.stdout.strip().splitlines()[-1])
    lo, hi = results[SIZES[0]], results[SIZES[-1]]
    ratio = hi["peak_above_base_mb"] / lo["peak_above_base_mb"]
    ratio_data = hi["peak_above_warmed_mb"] / lo["peak_above_warmed_mb"]
    summary = {"results": results, "ratio": ratio, "ratio_above_warm_up": ratio_data, "made_seconds": made,
               "ok": hi["peak_above_base_mb"] < LIMIT_MB and 0.9 <= ratio <= 1.1}
    if args.json:
        print(json.dumps(summary))
        return
    print(f"folders written in {made:.1f} s; seed-cnn 3×32×32, conv1 + conv2, batches of 256, {allocator()}")
    print(f"{'images':>7} {'phase':<18} {'seconds':>8} {'peak above model':>17} {'above warm-up':>14} "
          f"{'growth in phase':>16}")
    for n, r in results.items():
        for name, p in r["phases"].items():
            print(f"{n:>7,} {name:<18} {p['seconds']:8.2f} {p['above_base_mb']:14.1f} MB {p['above_warmed_mb']:11.1f} MB "
                  f"{p['growth_mb']:13.1f} MB")
        print(f"{n:>7,} model process {r['base_mb']:.0f} MB; warm-up passes on one in-memory batch add "
              f"{r['warmed_mb']:.1f} MB; in memory the pixels would take {r['in_memory_mb']:.1f} MB")
    print(f"peak above the model's own: {lo['peak_above_base_mb']:.1f} MB at {SIZES[0]:,} images, "
          f"{hi['peak_above_base_mb']:.1f} MB at {SIZES[-1]:,} (limit {LIMIT_MB:.0f} MB: "
          f"{'met' if hi['peak_above_base_mb'] < LIMIT_MB else 'MISSED'})")
    print(f"ratio {SIZES[-1]:,} / {SIZES[0]:,} images, peak above the model: {ratio:.3f}; "
          f"above the warm-up: {ratio_data:.3f} (flat within ±10%: {0.9 <= ratio <= 1.1})")


if __name__ == "__main__":
    main()
