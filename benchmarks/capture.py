"""Cost of convlens.capture against a plain forward pass and captum's LayerActivation.

One process, models built here in plain torch (no torchvision): the seed CNN (batch 1 and
64, 1x28x28) and ResNet-18 (batch 1 and 8, 3x224x224); three layers captured in one pass.
Every variant runs under ``torch.no_grad()`` (captum's LayerActivation does so itself).

Variants, timed interleaved (one call of each, in rotating order, per repetition) and
summarised by the median over many repetitions, so background load hits all alike:

* ``plain``      ``model(x)``: the lower bound.
* ``with``       ``with convlens.capture(model, layers) as cap: model(x)`` — forward hooks
                 registered and removed around every call, copies kept.
* ``streaming``  hooks added once (as the dataset passes do), per batch ``cap.clear();
                 model(x)``.
* ``captum``     ``LayerActivation(model, [three modules]).attribute(x)``.

Run:  python benchmarks/capture.py [--quick]
(prefix MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456 to keep glibc from
page-faulting freed memory back in; see allocator())
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import convlens
from _common import allocator
from zoo import ResNet18, SeedCNN, seeded


def _timer(fn: Callable[[], object], inner: int) -> Callable[[], tuple[float, float]]:
    """Wall-clock and process CPU seconds per call, over ``inner`` calls."""

    def run() -> tuple[float, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) / inner, (time.process_time() - c0) / inner

    return run


def bench(model: torch.nn.Module, x: torch.Tensor, layers: list[str], reps: int, inner: int) -> dict[str, float]:
    from captum.attr import LayerActivation

    modules = dict(model.named_modules())
    stream = convlens.capture(model, layers)

    def plain() -> object:
        return model(x)

    def with_block() -> object:
        with convlens.capture(model, layers) as cap:
            model(x)
        return cap

    def streaming() -> object:
        stream.clear()
        return model(x)

    def captum() -> object:
        return LayerActivation(model, [modules[n] for n in layers]).attribute(x)

    # the same values, or the comparison means nothing
    with torch.no_grad():
        ref = captum()
        with convlens.capture(model, layers) as cap:
            model(x)
    for name, r in zip(layers, ref, strict=True):
        torch.testing.assert_close(cap[name], r)

    variants = {"plain": plain, "with": with_block, "streaming": streaming, "captum": captum}
    timers = {k: _timer(v, inner) for k, v in variants.items()}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    names = list(variants)
    with torch.no_grad(), stream:
        for _ in range(3):  # warm-up
            for k in names:
                timers[k]()
        gc.collect()
        gc.disable()
        try:
            for rep in range(reps):
                order = names[rep % len(names):] + names[: rep % len(names)]
                for k in order:
                    if k == "streaming":
                        times[k].append(timers[k]())
                    else:
                        stream.remove_hooks()  # the streaming hooks must not slow the others
                        times[k].append(timers[k]())
                        stream.__enter__()
        finally:
            gc.enable()
    # medians of times, and medians of the ratios paired within one repetition (robust to
    # drifting background load), for wall-clock and for process CPU time
    result: dict[str, float] = {}
    for k, v in times.items():
        result[k] = statistics.median(w for w, _ in v)
        result[f"ratio {k}"] = statistics.median(w / p[0] for (w, _), p in zip(v, times["plain"], strict=True))
        result[f"cpu ratio {k}"] = statistics.median(
            c / max(p[1], 1e-9) for (_, c), p in zip(v, times["plain"], strict=True)
        )
    result["over with"] = statistics.median(w - p[0] for (w, _), p in zip(times["with"], times["plain"], strict=True))
    result["ratio with/captum"] = statistics.median(
        w / c[0] for (w, _), c in zip(times["with"], times["captum"], strict=True)
    )
    # page faults per call: memory the OS had to hand out again (explains small-model costs)
    with torch.no_grad():
        for k, fn in variants.items():
            if k == "streaming":
                stream.__enter__()
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(20):
                fn()
            result[f"faults {k}"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 20
            if k == "streaming":
                stream.remove_hooks()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = ap.parse_args()
    scale = 0.1 if args.quick else 1.0
    torch.manual_seed(0)
    configs = [
        ("seed-cnn", seeded(SeedCNN()), (1, 1, 28, 28), ["conv1", "relu1", "conv2"], 600, 20),
        ("seed-cnn", seeded(SeedCNN()), (64, 1, 28, 28), ["conv1", "relu1", "conv2"], 300, 2),
        ("resnet-18", seeded(ResNet18()), (1, 3, 224, 224), ["layer1.0.bn2", "layer3", "layer4.1.conv2"], 60, 1),
        ("resnet-18", seeded(ResNet18()), (8, 3, 224, 224), ["layer1.0.bn2", "layer3", "layer4.1.conv2"], 20, 1),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {allocator()}; median of interleaved repetitions")
    header = (f"{'model':<10} {'batch':>5}  {'plain':>9}  {'with':>13}  {'streaming':>13}  {'captum':>13}  "
              "with/captum  with-plain  faults")
    print(header)
    print("-" * len(header))
    for name, model, shape, layers, reps, inner in configs:
        x = torch.randn(shape)
        t = bench(model, x, layers, max(5, int(reps * scale)), inner)
        p = t["plain"]

        def cell(k: str, t: dict[str, float] = t) -> str:
            return f"{t['ratio ' + k]:5.3f}x {t[k] * 1e3:6.2f}"

        faults = "/".join(f"{t['faults ' + k]:.0f}" for k in ("plain", "with", "streaming", "captum"))
        cpu = " ".join(f"{t['cpu ratio ' + k]:.3f}x" for k in ("with", "streaming", "captum"))
        print(
            f"{name:<10} {shape[0]:>5}  {p * 1e3:6.2f} ms  {cell('with')}  {cell('streaming')}  "
            f"{cell('captum')}  {t['ratio with/captum']:5.3f}x     {t['over with'] * 1e6:6.1f} µs  {faults}  [cpu {cpu}]"
        )
    print("cells: median ratio to plain (paired per repetition), then median milliseconds per call;\n"
          "with-plain: median of the paired differences, what one capture block adds;\n"
          "faults: minor page faults per call (plain/with/streaming/captum);\n"
          "[cpu ...]: the same ratios in process CPU time (with, streaming, captum)")


if __name__ == "__main__":
    main()
