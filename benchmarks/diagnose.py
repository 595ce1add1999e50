"""What convlens.diagnose costs, against a plain forward pass over the same data.

Targets (issue 12), all measured in this one run on the 9,000 offline MNIST digits
(7,500 train + 1,500 test of ../shared/data/mnist-9k, as one dataset):

* the diagnosis pass without the gallery (``k=0, cells=0``: confusion, per-class scores,
  top-k, calibration, confident learning) runs at >= 0.9x the throughput of a plain
  ``torch.no_grad()`` forward pass over the same batches (the best of ``--repeats``
  alternating runs of each, and the median ratio of adjacent pairs);
* the gallery costs at most one batched forward and backward per gallery item: counted
  by a wrapper module that adds up the rows the model sees with and without gradients
  (the difference between ``k=24`` and ``k=0``), and timed (the median difference of
  back-to-back ``k=24`` and ``k=0`` runs) against one plain batched forward and backward
  of the gallery items;
* peak memory of ``diagnose`` over the 9,000 digits (gallery, confusion cells and nearest
  neighbours among the 7,500 training digits included) stays below the dataset's memory
  plus 300 MB: resident set size sampled every millisecond in a fresh subprocess (see
  benchmarks/memory.py), minus the process before any data was loaded.

The model is seed-cnn with the weights of ``--run`` (default: seeded random weights,
which make nine in ten inputs errors: the heaviest gallery and confusion cells).

Run:  python benchmarks/diagnose.py [--data-dir DIR] [--run RUN] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from _common import allocator

LIMIT_MB = 300.0


class Counting(nn.Module):
    """The model, counting the rows it is called on, with and without gradients."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows = {"grad": 0, "no_grad": 0}
        self.calls = {"grad": 0, "no_grad": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = "grad" if torch.is_grad_enabled() else "no_grad"
        self.rows[key] += int(x.shape[0])
        self.calls[key] += 1
        return self.inner(x)

    def reset(self) -> None:
        self.rows = {"grad": 0, "no_grad": 0}
        self.calls = {"grad": 0, "no_grad": 0}


def load(data_dir: Path, run: Path | None) -> tuple[nn.Module, Any, Any, Any]:
    import convlens

    if run is not None:
        model = convlens.load_run(run).model.eval()
    else:
        torch.manual_seed(0)
        model = convlens.build_model("seed-cnn").eval()
    train = convlens.load_dataset("mnist", "train", data_dir=data_dir)
    test = convlens.load_dataset("mnist", "test", data_dir=data_dir)
    both = dataclasses.replace(test, images=torch.cat([train.images, test.images]),
                               labels=torch.cat([train.labels, test.labels]), split="train+test")
    return model, both, train, test


def plain_forward(model: nn.Module, data: Any, batch_size: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for x, _ in data.batches(batch_size):
            model(x)
    return time.perf_counter() - start


def speed(data_dir: Path, run: Path | None, batch_size: int, repeats: int) -> dict[str, Any]:
    from convlens.diagnose import diagnose

    model, both, _, _ = load(data_dir, run)
    plain_forward(model, both, batch_size)  # warm-up
    plain, passes = [], []
    for _ in range(repeats):  # alternate, so load from other jobs hits both alike
        plain.append(plain_forward(model, both, batch_size))
        start = time.perf_counter()
        diagnose(model, both, k=0, cells=0, batch_size=batch_size, progress=False)
        passes.append(time.perf_counter() - start)
    counting = Counting(model)
    counting.reset()
    diagnose(counting, both, k=0, cells=0, batch_size=batch_size, progress=False)
    base_rows = dict(counting.rows)
    counting.reset()
    d = diagnose(counting, both, k=24, cells=0, batch_size=batch_size, progress=False)
    overheads = []
    for _ in range(max(1, repeats // 2)):  # the gallery's time: k=24 minus k=0, run back to back
        start = time.perf_counter()
        diagnose(model, both, k=0, cells=0, batch_size=batch_size, progress=False)
        middle = time.perf_counter()
        diagnose(model, both, k=24, cells=0, batch_size=batch_size, progress=False)
        overheads.append(time.perf_counter() - 2 * middle + start)
    gallery_s = statistics.median(overheads)
    items = sorted({i.index for kind in d.errors.values() for i in kind})
    rows = {k: counting.rows[k] - base_rows[k] for k in counting.rows}
    calls_grad = counting.calls["grad"]  # the k=24 run only (reset before it)
    x = both.normalise(both.images[torch.tensor(items)])
    start = time.perf_counter()
    xg = x.clone().requires_grad_(True)
    model(xg).logsumexp(1).sum().backward()  # one plain batched forward and backward of the items
    fwd_bwd = time.perf_counter() - start
    counting.reset()
    diagnose(counting, both, k=24, batch_size=batch_size, progress=False)  # with the 10 confusion cells
    cells_rows = counting.rows["grad"]
    return {
        "n": len(both), "batch_size": batch_size, "threads": torch.get_num_threads(),
        "plain_s": min(plain), "pass_s": min(passes), "throughput_ratio": min(plain) / min(passes),
        "paired_ratio": statistics.median(a / b for a, b in zip(plain, passes, strict=True)),
        "gallery_items": len(items), "grad_rows": rows["grad"], "grad_calls": calls_grad,
        "no_grad_rows": rows["no_grad"], "gallery_s": gallery_s, "fwd_bwd_s": fwd_bwd,
        "cells_grad_rows": cells_rows, "accuracy": d.accuracy,
    }


def memory(data_dir: Path, run: Path | None, batch_size: int) -> dict[str, Any]:
    """In a fresh process: the peak RSS of diagnose over the 9,000 digits."""
    import convlens
    from convlens.diagnose import diagnose
    from memory import PeakSampler, rss_bytes

    torch.manual_seed(0)
    warm = convlens.build_model("seed-cnn").eval()
    with torch.no_grad():
        warm(torch.zeros(batch_size, 1, 28, 28))
    base = rss_bytes()
    model, both, train, _ = load(data_dir, run)
    data_mb = (both.images.nbytes + both.labels.nbytes + train.images.nbytes + train.labels.nbytes) / 2**20
    with PeakSampler() as s:
        diagnose(model, both, k=24, train=train, batch_size=batch_size, progress=False)
    return {"base_mb": base / 2**20, "peak_mb": s.peak / 2**20, "over_base_mb": (s.peak - base) / 2**20,
            "data_mb": data_mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get(
        "CONVLENS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-9k")))
    ap.add_argument("--run", type=Path, default=None)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_only:
        print(json.dumps(memory(args.data_dir, args.run, args.batch_size)))
        return
    r = speed(args.data_dir, args.run, args.batch_size, args.repeats)
    cmd = [sys.executable, __file__, "--memory-only", "--data-dir", str(args.data_dir), "--threads",
           str(args.threads), "--batch-size", str(args.batch_size)] + (["--run", str(args.run)] if args.run else [])
    m = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    g = r["gallery_items"]
    print(f"{r['n']} inputs, batches of {r['batch_size']}, {r['threads']} threads, {allocator()}, "
          f"model {'run ' + str(args.run) if args.run else 'seed-cnn (seeded random weights)'}, accuracy "
          f"{r['accuracy']:.2%}")
    print(f"plain no_grad forward: {r['plain_s']:.3f} s; diagnosis pass without gallery: {r['pass_s']:.3f} s; "
          f"throughput ratio {r['throughput_ratio']:.2f}x of the best runs, median of {args.repeats} adjacent pairs "
          f"{r['paired_ratio']:.2f}x (target >= 0.9x)")
    print(f"gallery of {g} items: {r['grad_rows']} rows with gradients in {r['grad_calls']} batched "
          f"forward+backward call(s) = {r['grad_rows'] / g:.2f} per item (pred and true class: 1 row each; "
          f"target <= 1 call per item); {r['no_grad_rows']} rows without gradients = "
          f"{r['no_grad_rows'] / g:.1f} per item (deletion curves, 17 points, and features)")
    print(f"gallery time {r['gallery_s']:.3f} s = {r['gallery_s'] / r['fwd_bwd_s']:.1f}x one plain batched "
          f"forward+backward of the {g} items ({r['fwd_bwd_s']:.4f} s)")
    print(f"with the 10 largest confusion cells (16 inputs each) explained too: {r['cells_grad_rows']} rows "
          "with gradients")
    bound = m["data_mb"] + LIMIT_MB * 1e6 / 2**20  # 300 MB in MiB
    print(f"peak memory over the process before any data: {m['over_base_mb']:.0f} MiB (data {m['data_mb']:.1f} "
          f"MiB + 300 MB = {bound:.0f} MiB: {'met' if m['over_base_mb'] < bound else 'MISSED'}); peak RSS "
          f"{m['peak_mb']:.0f} MiB")


if __name__ == "__main__":
    main()
