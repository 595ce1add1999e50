"""Throughput of the statistics + top-k pass on the Ray engine against the in-process pass.

The pass: ``convlens.channel_stats`` of conv1 and conv2 and ``convlens.topk_examples`` of
conv2 (k=9, with crops), batches of 256, over the 9,000 digits of mnist-9k (train and test
together), with the seed CNN (seeded weights: the cost does not depend on them).

* ``in-process``  the default engine, PyTorch's own threads (2 on this machine).
* ``ray warm``    ``RayEngine`` on a local cluster of 2 CPUs (``ray.init(num_cpus=2)``):
                  2 actors, one thread each, 8 partitions; the actors already hold the
                  model (a notebook or a job running several passes keeps one engine).
* ``ray cold``    the same, actors started for the pass and stopped after it (what
                  ``engine="ray"`` does): timed once, first.

``in-process`` and ``ray warm`` are timed interleaved (one of each per repetition,
rotating order), summarised by the median; the cluster itself is started before any
timing. The Ray results are
checked against the in-process ones (top-k indices identical, statistics to 1e-9).

Run:  CONVLENS_DATA_DIR=../shared/data/mnist-9k python benchmarks/engine.py [--reps 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import convlens
from convlens.data import ImageDataset
from convlens.inspect.executors import RayEngine


def mnist_9k() -> ImageDataset:
    train, test = (convlens.load_dataset("mnist", s) for s in ("train", "test"))
    return ImageDataset(images=torch.cat([train.images, test.images]), labels=torch.cat([train.labels, test.labels]),
                        classes=train.classes, name="mnist", split="train+test", source=train.source,
                        mean=train.mean, std=train.std, label_kind=train.label_kind)


def the_pass(model: torch.nn.Module, data: ImageDataset, engine: Any) -> tuple[Any, Any]:
    stats = convlens.channel_stats(model, data, ["conv1", "conv2"], batch_size=256, progress=False, engine=engine)
    top = convlens.topk_examples(model, data, "conv2", k=9, batch_size=256, progress=False, engine=engine)
    return stats, top


def same(a: tuple[Any, Any], b: tuple[Any, Any]) -> str:
    (sa, ta), (sb, tb) = a, b
    rel = max(float(((sa[k].mean - sb[k].mean).abs() / sa[k].mean.abs().clamp_min(1e-300)).max()) for k in sa)
    idx = all(torch.equal(ta[k].indices, tb[k].indices) for k in ta)
    counts = all(torch.equal(sa[k].silent_fraction, sb[k].silent_fraction) for k in sa)
    return f"top-k indices identical: {idx}; silent counts identical: {counts}; largest relative mean difference {rel:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    import ray

    data = mnist_9k()
    torch.manual_seed(0)
    model = convlens.build_model("seed-cnn")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    print(f"ray.init(num_cpus=2): {time.perf_counter() - t0:.2f} s (not counted below)")
    results: dict[str, Any] = {}
    times: dict[str, list[float]] = {"in-process": [], "ray warm": [], "ray cold": []}
    # cold: actors started for the pass and stopped after it (once, before the warm engine
    # holds both CPUs of the cluster)
    t = time.perf_counter()
    with RayEngine(actors=2, partitions=8) as eng:
        results["ray cold"] = the_pass(model, data, eng)
    times["ray cold"].append(time.perf_counter() - t)
    while ray.available_resources().get("CPU", 0) < 2:  # the stopped actors free their CPUs
        time.sleep(0.1)
    warm = RayEngine(actors=2, partitions=8)
    the_pass(model, data, warm)  # starts the actors
    variants: dict[str, Callable[[], tuple[Any, Any]]] = {
        "in-process": lambda: the_pass(model, data, "inprocess"),
        "ray warm": lambda: the_pass(model, data, warm),
    }
    names = list(variants)
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            t = time.perf_counter()
            results[name] = variants[name]()
            times[name].append(time.perf_counter() - t)
    warm.close()
    ray.shutdown()
    n = len(data)
    base = statistics.median(times["in-process"])
    print(f"{n} inputs, statistics of conv1+conv2 and top-9 of conv2, batches of 256, "
          f"{torch.get_num_threads()} threads in-process, {os.cpu_count()} CPUs; median of {args.reps} (cold: 1 run)")
    for name, ts in times.items():
        med = statistics.median(ts)  # one run for "ray cold"
        print(f"{name:>10}: {med:6.2f} s  {n / med:8.0f} inputs/s  throughput {base / med:.2f}x in-process  "
              f"(runs: {', '.join(f'{t:.2f}' for t in ts)})")
    print("ray warm vs in-process: " + same(results["in-process"], results["ray warm"]))
    print("ray cold vs in-process: " + same(results["in-process"], results["ray cold"]))


if __name__ == "__main__":
    main()
