"""The NumPy reference conv2d against torch.nn.functional.conv2d, float32, 2 threads.

Layers (weights and inputs drawn from a seeded normal distribution):

* seed conv1: 1→16 channels, 5×5, padding 2, on 28×28, batch 64
* seed conv2: 16→32 channels, 5×5, padding 2, on 14×14, batch 64
* wide 3×3:   64→64 channels, 3×3, padding 1, on 56×56, batch 8

Both sides run in this process, in alternating blocks of a few calls each (a block
of torch calls, then a block of convlens calls, then the other order). The primary
figure is the ratio of the *fastest* call of each side (as ``timeit`` recommends: the
minimum is what the code costs when nothing else competes for the 2 cores); the ratio
of medians is printed beside it. Interleaving single calls is avoided on purpose, and
each block starts after a short rest: torch's OpenMP threads and OpenBLAS's threads
both spin-wait for a while after a call and slow the other library down if it runs
right after. Every result is checked against torch.
Prints each ratio and the geometric mean; the target is a geometric mean ≤ 3.0.

Run:  python benchmarks/conv.py [--blocks N] [--calls N] [--pause SECONDS]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convlens.conv import conv2d

LAYERS = [
    # name, batch, in, out, kernel, padding, size
    ("seed conv1 1→16 5×5 28×28 N=64", 64, 1, 16, 5, 2, 28),
    ("seed conv2 16→32 5×5 14×14 N=64", 64, 16, 32, 5, 2, 14),
    ("3×3 64→64 56×56 N=8", 8, 64, 64, 3, 1, 56),
]


def _once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10, help="blocks of calls per side and layer")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per block")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds of rest before each block")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, float32")
    print(f"{'':38s} {'fastest call (ms)':>26s}   {'median call (ms)':>26s}")
    print(
        f"{'layer':38s} {'torch':>9s} {'convlens':>9s} {'ratio':>6s}   {'torch':>9s} {'convlens':>9s} "
        f"{'ratio':>6s}   {'max|diff|':>8s}"
    )
    ratios = []
    for name, n, c_in, c_out, k, p, size in LAYERS:
        x = rng.standard_normal((n, c_in, size, size)).astype(np.float32)
        w = (rng.standard_normal((c_out, c_in, k, k)) / math.sqrt(c_in * k * k)).astype(np.float32)
        b = rng.standard_normal(c_out).astype(np.float32)
        tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)

        # each side keeps its last results alive, as a caller would: freeing every
        # output at once lets malloc hand the memory back to the kernel, and the next
        # call then pays page faults (on this VM up to 10x the arithmetic, for
        # either library)
        kept: dict[str, deque[Any]] = {"torch": deque(maxlen=2), "convlens": deque(maxlen=2)}

        def ref(tx: torch.Tensor = tx, tw: torch.Tensor = tw, tb: torch.Tensor = tb, p: int = p,
                kept: dict[str, deque[Any]] = kept) -> torch.Tensor:
            with torch.no_grad():
                y = F.conv2d(tx, tw, tb, padding=p)
            kept["torch"].append(y)
            return y

        def ours(x: np.ndarray = x, w: np.ndarray = w, b: np.ndarray = b, p: int = p,
                 kept: dict[str, deque[Any]] = kept) -> np.ndarray:
            y = conv2d(x, w, b, padding=p)
            kept["convlens"].append(y)
            return y

        diff = float(np.abs(ours() - ref().numpy()).max())
        times: dict[str, list[float]] = {"torch": [], "convlens": []}
        sides = [("torch", ref), ("convlens", ours)]
        for block in range(args.blocks):
            for side, fn in sides if block % 2 == 0 else sides[::-1]:
                time.sleep(args.pause)  # let the other library's idle threads stop spinning
                fn()  # first call of a block: wakes the thread pool, not timed
                times[side].extend(_once(fn) for _ in range(args.calls))
        best = {k: min(v) for k, v in times.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = best["convlens"] / best["torch"]
        ratios.append(ratio)
        print(
            f"{name:38s} {best['torch'] * 1e3:9.2f} {best['convlens'] * 1e3:9.2f} {ratio:6.2f}"
            f"   {med['torch'] * 1e3:9.2f} {med['convlens'] * 1e3:9.2f} "
            f"{med['convlens'] / med['torch']:6.2f}   {diff:8.1e}"
        )
    gmean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    verdict = "meets" if gmean <= 3.0 else "MISSES"
    print(f"geometric mean ratio (fastest calls): {gmean:.2f} ({verdict} the target ≤ 3.0)")


if __name__ == "__main__":
    main()
