"""CKA speed and agreement against torch_cka 0.21, measured in one run.

Two four-conv-cnn runs (seeds 0 and 1, trained by ``benchmarks/compare_seeds.py``), the
ReLU outputs of their four conv stages (relu1 .. relu4, the layers of Kornblith's check)
flattened to C·H·W, all 9,000 offline MNIST digits (train + test) in batches of 250 (36
equal batches, so torch_cka's per-batch weights equal ours). Prints:

* the plain lower bound: both models' forward passes over the data;
* convlens's minibatch estimator and torch_cka on the same models, layers and batches,
  the largest difference of their values and the speed ratio; then where the time goes:
  the Gram matrices each library makes per batch (convlens one per layer, torch_cka one
  per layer of A and one per pair), timed alone;
* convlens's exact estimator against the forward passes over the same inputs: spatially
  averaged features over the 9,000 digits (the feature-space form), flattened features
  over the 1,500 test digits (the Gram form), and what the flattened features of all
  9,000 would need (refused by the default 2 GiB memory budget, in one line).

    CONVLENS_DATA_DIR=../shared/data/mnist-9k python benchmarks/compare.py [THREADS]

THREADS (default 1) is torch's thread count for everything measured here.
"""

from __future__ import annotations

import resource
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

import convlens
from convlens.compare import CKAWarning, Similarity
from convlens.data import load_dataset
from convlens.errors import ConfigError
from convlens.inspect.capture import capture_once

RUNS = Path("runs/compare-seeds")
LAYERS = ["relu1", "relu2", "relu3", "relu4"]
BATCH = 250
T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def forward_time(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    def forward() -> None:
        with torch.no_grad():
            for s in range(0, x.shape[0], BATCH):
                a(x[s:s + BATCH])
                b(x[s:s + BATCH])

    forward()  # warm-up
    return timed(forward)[1]


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)  # 1: steadier on a shared machine
    a = convlens.load_run(RUNS / "four-conv-cnn-seed0").model.eval()
    b = convlens.load_run(RUNS / "four-conv-cnn-seed1").model.eval()
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    x_test = test.normalise(test.images)
    x = torch.cat([train.normalise(train.images), x_test])  # (9000, 1, 28, 28)
    y = torch.cat([train.labels, test.labels])
    print(f"{x.shape[0]} inputs, layers {LAYERS}, batches of {BATCH}, {torch.get_num_threads()} threads")
    t_fwd = min(forward_time(a, b, x), forward_time(a, b, x))
    print(f"forward passes of both models: {t_fwd:.2f} s")

    def ours() -> Similarity:
        return convlens.cka(a, b, x, layers_a=LAYERS, estimator="minibatch", batch_size=BATCH, progress=False)

    try:
        from torch_cka import CKA
    except ImportError:
        CKA = None
        print("torch_cka is not installed (pip install torch_cka==0.21): comparison skipped")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)

    def theirs() -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = CKA(a, b, "A", "B", model1_layers=LAYERS, model2_layers=LAYERS, device="cpu")
            ref.compare(loader)
        for m in (a, b):  # torch_cka leaves its hooks on the models
            for mod in m.modules():
                mod._forward_hooks.clear()
        return ref.export()["CKA"].numpy().astype(np.float64)

    # alternated, twice each, the faster of two kept: other jobs' load comes and goes
    t_mb = t_ref = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dead-channel notes, printed once below
        for _ in range(2):
            mb, t = timed(ours)
            t_mb = min(t_mb, t)
            if CKA is not None:
                their, t = timed(theirs)
                t_ref = min(t_ref, t)
    print(f"convlens minibatch: {t_mb:.2f} s ({t_mb / t_fwd:.2f}× the forward passes)")
    for w in mb.warnings:
        print("  note:", w)
    if CKA is not None:
        diff = float(np.abs(their - (mb.raw if mb.raw is not None else mb.matrix)).max())
        print(f"torch_cka 0.21: {t_ref:.2f} s; convlens minibatch is {t_ref / t_mb:.1f}× faster; "
              f"largest difference of the 16 values {diff:.2e}")
    # where the time goes: one batch's features, Gram matrices made as each library makes them
    feats = []
    for m in (a, b):
        held = capture_once(m, x[:BATCH], LAYERS)
        for name in LAYERS:
            f = held[name]
            assert isinstance(f, torch.Tensor)  # one call per layer: a tensor
            feats.append(f.detach().flatten(1))
    fa, fb = feats[:4], feats[4:]

    def grams(count_b: int) -> None:
        for f in fa:
            f @ f.T
        for f in fb * count_b:
            f @ f.T

    grams(1)
    _, t_ours = timed(lambda: grams(1))  # 4 + 4
    _, t_theirs = timed(lambda: grams(4))  # 4 + 4 × 4
    batches = x.shape[0] // BATCH
    print(f"Gram matrices of one batch: 8 (convlens) in {t_ours * 1e3:.0f} ms, 20 (torch_cka) in "
          f"{t_theirs * 1e3:.0f} ms; × {batches} batches + the forward passes: at most "
          f"{(t_fwd + batches * t_theirs) / (t_fwd + batches * t_ours):.1f}× for one Gram matrix per layer and batch")

    warnings.simplefilter("ignore", CKAWarning)
    ex, t_ex = timed(lambda: convlens.cka(a, b, x, layers_a=LAYERS, pool="mean", batch_size=BATCH, progress=False))
    print(f"convlens exact, pool='mean' ({ex.settings['form']} form), 9,000 inputs: {t_ex:.2f} s = "
          f"{t_ex / t_fwd:.2f}× the forward passes")
    t_fwd_test = forward_time(a, b, x_test)
    ex, t_ex = timed(lambda: convlens.cka(a, b, x_test, layers_a=LAYERS, batch_size=BATCH, progress=False))
    print(f"convlens exact, flattened ({ex.settings['form']} form, {ex.settings['memory_bytes'] / 2**20:,.0f} MiB kept), "
          f"1,500 test inputs: {t_ex:.2f} s = {t_ex / t_fwd_test:.2f}× their forward passes ({t_fwd_test:.2f} s)")
    try:
        convlens.cka(a, b, x, layers_a=LAYERS, batch_size=BATCH, progress=False)
    except ConfigError as exc:
        print(f"convlens exact, flattened, 9,000 inputs: refused: {exc}")
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print("minibatch CKA diagonal:", np.round(np.diag(mb.matrix), 4).tolist(),
          "jackknife s.e.:", None if mb.stderr is None else np.round(np.diag(mb.stderr), 4).tolist())


if __name__ == "__main__":
    main()
