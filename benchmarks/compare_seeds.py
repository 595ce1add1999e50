"""Kornblith et al.'s check on this machine: does linear CKA find the corresponding layer
between CNNs that differ only in their random seed?

Trains ``--models`` runs of ``four-conv-cnn`` (four 3×3 conv stages, 32/32/64/64
channels) on the offline MNIST, seeds ``--first-seed``, ``--first-seed + 1``, ... Then, for
every ordered pair of runs (A, B) and every stage of A, asks whether the layer of B with
the highest linear CKA (exact, over the 1,500 test digits) is the layer of the same
depth. Chance is one in the number of layers.

The layers compared are, by default, the ReLU output of each conv stage
(``--point relu``: relu1 .. relu4, the post-activation representations Kornblith et al.
compared); ``--point conv`` takes the conv outputs before the activation. Features are
flattened to C·H·W (``--pool flatten``) or averaged over space (``--pool mean``).

CKA is symmetric, so each unordered pair is computed once and read both ways. Runs are
reused only when they are complete and of the same architecture and epochs. It runs on
one thread by default (``--threads``): on a machine shared with other jobs PyTorch's
thread pool slows down badly.

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
from convlens.data import load_dataset
from convlens.models.registry import get_config
from convlens.train import TrainConfig
from convlens.views import train_run

ARCH = "four-conv-cnn"


def reusable(out: Path, epochs: int) -> bool:
    """A complete run of today's ``four-conv-cnn`` trained for ``epochs`` epochs."""
    try:
        metrics = json.loads((out / "metrics.json").read_text())
        run = convlens.load_run(out)
    except (OSError, ValueError, convlens.ConvlensError):
        return False
    return bool(metrics.get("complete")) and len(metrics.get("epochs", [])) == epochs and \
        run.config.model.convs == get_config(ARCH).convs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--runs", type=Path, default=Path("runs/compare-seeds"))
    p.add_argument("--point", default="relu", choices=["relu", "conv"])
    p.add_argument("--pool", default="flatten", choices=["flatten", "mean"])
    p.add_argument("--estimator", default="exact", choices=["exact", "minibatch"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    runs = []
    for seed in range(args.first_seed, args.first_seed + args.models):
        out = args.runs / f"{ARCH}-seed{seed}"
        if not reusable(out, args.epochs):
            t0 = time.perf_counter()
            train_run(out, arch=ARCH, config=TrainConfig(epochs=args.epochs, seed=seed, snapshot_every=0),
                      device="cpu", data=(train, test), overwrite=True)
            print(f"trained seed {seed} in {time.perf_counter() - t0:.0f} s")
        run = convlens.load_run(out)
        runs.append(run)
        print(f"seed {seed}: test accuracy {run.test_accuracy:.4f}")
    layers = [f"{args.point}{i}" for i in range(1, len(get_config(ARCH).convs) + 1)]
    matrices: dict[tuple[int, int], np.ndarray] = {}
    t0 = time.perf_counter()
    for i, j in itertools.combinations(range(len(runs)), 2):
        sim = convlens.cka(runs[i].model, runs[j].model, test, layers_a=layers, estimator=args.estimator,
                           pool=args.pool, progress=False)
        matrices[(i, j)], matrices[(j, i)] = sim.matrix, sim.matrix.T  # CKA(A_k, B_l) = CKA(B_l, A_k)
    seconds = time.perf_counter() - t0
    hits, rows = 0, []
    misses: dict[str, int] = {}
    for (i, j), m in sorted(matrices.items()):
        picked = np.argmax(m, axis=1)
        hits += int((picked == np.arange(len(layers))).sum())
        for k, q in enumerate(picked):
            if q != k:
                misses[f"{layers[k]}→{layers[q]}"] = misses.get(f"{layers[k]}→{layers[q]}", 0) + 1
        rows.append({"a": i, "b": j, "diagonal": np.diag(m).round(4).tolist(), "picked": picked.tolist()})
    cases = len(rows) * len(layers)
    print(f"layers {layers} ({args.pool}); {len(rows)} ordered pairs × {len(layers)} layers = {cases} cases")
    print(f"linear CKA ({args.estimator}) picks the corresponding layer in {hits}/{cases} = {hits / cases:.1%} "
          f"of cases (chance {1 / len(layers):.1%}); misses: {misses or 'none'}; {seconds:.1f} s for "
          f"{len(matrices) // 2} unordered pairs on {torch.get_num_threads()} threads")
    worst = min(rows, key=lambda r: min(r["diagonal"]))
    print("pair with the lowest same-layer CKA:", json.dumps(worst))


if __name__ == "__main__":
    main()
