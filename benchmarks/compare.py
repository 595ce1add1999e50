"""CKA speed and agreement against torch_cka 0.21, measured in one run.

Two four-conv-cnn runs (seeds 0 and 1, trained by ``benchmarks/compare_seeds.py``), their
four conv layers flattened to C·H·W, all 9,000 offline MNIST digits (train + test) in
batches of 250 (36 equal batches, so torch_cka's per-batch weights equal ours). Prints:

* the plain lower bound: both models' forward passes over the data;
* convlens's minibatch estimator and torch_cka on the same models, layers and batches,
  the largest difference of their values and the speed ratio;
* convlens's exact estimator (spatially averaged features: the flattened ones need more
  than the 2 GiB memory budget at 9,000 inputs, as the refusal printed here says) against
  the forward passes.

    CONVLENS_DATA_DIR=../shared/data/mnist-9k python benchmarks/compare.py
"""

from __future__ import annotations

import resource
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import convlens
from convlens.data import load_dataset
from convlens.errors import ConfigError

RUNS = Path("runs/compare-seeds")
LAYERS = ["conv1", "conv2", "conv3", "conv4"]
BATCH = 250


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    a = convlens.load_run(RUNS / "four-conv-cnn-seed0").model.eval()
    b = convlens.load_run(RUNS / "four-conv-cnn-seed1").model.eval()
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    x = torch.cat([train.normalise(train.images), test.normalise(test.images)])  # (9000, 1, 28, 28)
    y = torch.cat([train.labels, test.labels])
    print(f"{x.shape[0]} inputs, layers {LAYERS}, batches of {BATCH}, {torch.get_num_threads()} threads")

    def forward() -> None:
        with torch.no_grad():
            for s in range(0, x.shape[0], BATCH):
                a(x[s:s + BATCH])
                b(x[s:s + BATCH])

    forward()  # warm-up
    _, t_fwd = timed(forward)
    print(f"forward passes of both models: {t_fwd:.2f} s")

    mb, t_mb = timed(lambda: convlens.cka(a, b, x, layers_a=LAYERS, estimator="minibatch", batch_size=BATCH,
                                          progress=False))
    print(f"convlens minibatch: {t_mb:.2f} s ({t_mb / t_fwd:.2f}× the forward passes)")
    try:
        from torch_cka import CKA
    except ImportError:
        print("torch_cka is not installed (pip install torch_cka==0.21): comparison skipped")
    else:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = CKA(a, b, "A", "B", model1_layers=LAYERS, model2_layers=LAYERS, device="cpu")
            _, t_ref = timed(lambda: ref.compare(loader))
        theirs = ref.export()["CKA"].numpy().astype(np.float64)
        for m in (a, b):  # torch_cka leaves its hooks on the models
            for mod in m.modules():
                mod._forward_hooks.clear()
        diff = float(np.abs(theirs - (mb.raw if mb.raw is not None else mb.matrix)).max())
        print(f"torch_cka 0.21: {t_ref:.2f} s; convlens minibatch is {t_ref / t_mb:.1f}× faster; "
              f"largest difference of the 16 values {diff:.2e}")
    try:
        convlens.cka(a, b, x, layers_a=LAYERS, progress=False)
    except ConfigError as exc:
        print(f"exact, flattened: refused: {exc}")
    ex, t_ex = timed(lambda: convlens.cka(a, b, x, layers_a=LAYERS, pool="mean", batch_size=BATCH, progress=False))
    print(f"convlens exact (pool='mean', {ex.settings['form']} form): {t_ex:.2f} s = {t_ex / t_fwd:.2f}× the forward "
          "passes")
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print("minibatch CKA diagonal:", np.round(np.diag(mb.matrix), 4).tolist(),
          "jackknife s.e.:", None if mb.stderr is None else np.round(np.diag(mb.stderr), 4).tolist())


if __name__ == "__main__":
    main()
