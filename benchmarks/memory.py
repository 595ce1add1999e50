"""Peak memory of the streaming passes over all 9,000 offline MNIST digits.

Acceptance (issue 4): channel statistics and top-k over the 9,000 digits of
../shared/data/mnist-9k (7,500 train + 1,500 test) for all conv layers of seed-cnn keep
the peak memory below the memory of the dataset plus 300 MB.

Measured honestly in one fresh process: the resident set size (RSS, from
/proc/self/statm) is sampled every millisecond by a background thread during each pass;
the bound is checked on the sampled peak minus the RSS of the process before any data was
loaded (torch and convlens imported, model built and warmed up by one forward pass), so the
dataset itself counts against it; "growth" is the peak minus the RSS just before the pass.
The RSS includes every allocation,
torch's CPU tensors included, which tracemalloc would not see. The dataset's memory is the
bytes of its uint8 image and label tensors.

Run:  python benchmarks/memory.py [--data-dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
LIMIT_MB = 300.0


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """Samples RSS in a thread while the block runs; ``peak`` is the largest sample."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakSampler:
        self.start = rss_bytes()
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def measure(data_dir: Path, batch_size: int = 256) -> dict[str, Any]:
    import convlens
    from convlens.inspect import channel_stats, layers, topk_examples

    torch.manual_seed(0)
    model = convlens.build_model("seed-cnn").eval()
    with torch.no_grad():  # warm up torch's kernels and allocator before the baseline
        model(torch.zeros(batch_size, 1, 28, 28))
    base = rss_bytes()  # torch, convlens and the model: the process before any data
    train = convlens.load_dataset("mnist", "train", data_dir=data_dir)
    test = convlens.load_dataset("mnist", "test", data_dir=data_dir)
    n = len(train) + len(test)
    dataset_bytes = sum(t.numel() * t.element_size() for d in (train, test) for t in (d.images, d.labels))
    convs = layers(model, train.shape).convs

    def all_digits() -> Any:
        return itertools.chain(train.batches(batch_size), test.batches(batch_size))

    results: dict[str, Any] = {
        "inputs": n,
        "layers": convs,
        "batch_size": batch_size,
        "dataset_mb": dataset_bytes / 2**20,
        "limit_mb": dataset_bytes / 2**20 + LIMIT_MB,
        "rss_base_mb": base / 2**20,
        "passes": {},
    }
    passes: dict[str, Callable[[], Any]] = {
        "channel_stats": lambda: channel_stats(model, all_digits(), convs, batch_size=batch_size, progress=False),
        "topk_examples k=9": lambda: topk_examples(model, all_digits(), convs, k=9, batch_size=batch_size, progress=False),
    }
    for name, run in passes.items():
        t0 = time.perf_counter()
        with PeakSampler() as s:
            out = run()
        seconds = time.perf_counter() - t0
        above_base = (s.peak - base) / 2**20
        results["passes"][name] = {
            "seconds": seconds,
            "rss_before_mb": s.start / 2**20,
            "rss_peak_mb": s.peak / 2**20,
            "growth_mb": (s.peak - s.start) / 2**20,
            "above_base_mb": above_base,
            "ok": above_base <= results["limit_mb"],
            "n_inputs": out.n_inputs,
        }
    results["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["ok"] = all(p["ok"] and p["n_inputs"] == n for p in results["passes"].values())
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = os.environ.get("CONVLENS_DATA_DIR", str(REPO.parent / "shared" / "data" / "mnist-9k"))
    ap.add_argument("--data-dir", type=Path, default=Path(default))
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    r = measure(args.data_dir)
    if args.json:
        print(json.dumps(r))
        return
    print(f"torch {torch.__version__}; {r['inputs']:,} digits; seed-cnn conv layers {', '.join(r['layers'])}; "
          f"batch {r['batch_size']}")
    print(f"process before data: {r['rss_base_mb']:.1f} MB RSS; dataset {r['dataset_mb']:.1f} MB; "
          f"limit on peak above that: dataset + {LIMIT_MB:.0f} MB = {r['limit_mb']:.1f} MB")
    print(f"{'pass':<18} {'seconds':>7} {'RSS before':>10} {'RSS peak':>9} {'growth':>7} {'peak-base':>9}  ok")
    for name, p in r["passes"].items():
        print(f"{name:<18} {p['seconds']:7.2f} {p['rss_before_mb']:8.1f}MB {p['rss_peak_mb']:7.1f}MB "
              f"{p['growth_mb']:5.1f}MB {p['above_base_mb']:7.1f}MB  {'yes' if p['ok'] else 'NO'}")
    print(f"process peak RSS (ru_maxrss, includes imports and data loading): {r['ru_maxrss_mb']:.1f} MB")


if __name__ == "__main__":
    main()
