"""Kornblith et al.'s check on this machine: does linear CKA find the corresponding layer
between CNNs that differ only in their random seed?

Trains ``--models`` runs of ``four-conv-cnn`` on the offline MNIST (seeds 0, 1, ...),
then, for every ordered pair of runs (A, B) and every conv layer of A, asks whether the
layer of B most similar to it (exact linear CKA over the test split) is the layer of the
same depth. Chance is one in the number of layers. Runs already trained are reused.

    CONVLENS_DATA_DIR=../shared/data/mnist-9k python benchmarks/compare_seeds.py --epochs 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

import convlens
from convlens.compare import conv_layers
from convlens.data import load_dataset
from convlens.train import TrainConfig
from convlens.views import train_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=int, default=5)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--runs", type=Path, default=Path("runs/compare-seeds"))
    p.add_argument("--estimator", default="exact", choices=["exact", "minibatch"])
    args = p.parse_args()
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    runs = []
    for seed in range(args.models):
        out = args.runs / f"four-conv-cnn-seed{seed}"
        if not (out / "metrics.json").exists():
            t0 = time.perf_counter()
            train_run(out, arch="four-conv-cnn", config=TrainConfig(epochs=args.epochs, seed=seed, snapshot_every=0),
                      device="cpu", data=(train, test))
            print(f"trained seed {seed} in {time.perf_counter() - t0:.0f} s")
        run = convlens.load_run(out)
        runs.append(run)
        print(f"seed {seed}: test accuracy {run.test_accuracy:.4f}")
    layers = conv_layers(runs[0].model)
    hits, cases, rows = 0, 0, []
    t0 = time.perf_counter()
    for i, j in itertools.permutations(range(len(runs)), 2):
        sim = convlens.cka(runs[i].model, runs[j].model, test, estimator=args.estimator, progress=False)
        picked = np.argmax(sim.matrix, axis=1)
        ok = picked == np.arange(len(layers))
        hits += int(ok.sum())
        cases += len(layers)
        rows.append({"a": i, "b": j, "diagonal": np.diag(sim.matrix).round(4).tolist(), "picked": picked.tolist()})
    seconds = time.perf_counter() - t0
    print(f"layers {layers}; {len(rows)} ordered pairs × {len(layers)} layers = {cases} cases")
    print(f"linear CKA ({args.estimator}) picks the corresponding layer in {hits}/{cases} = {hits / cases:.1%} "
          f"of cases (chance {1 / len(layers):.1%}); {seconds:.1f} s for all pairs on {torch.get_num_threads()} threads")
    print(json.dumps(rows[:3]))


if __name__ == "__main__":
    main()
