"""convlens's training loop against a plain PyTorch loop, and the demo's recipe against
the tutorial's, on the offline MNIST copy, in one process.

Part 1, loop speed (same work on both sides):
  * ``plain``     the tutorial's loop: TensorDataset of normalised float images +
                  DataLoader(batch_size=64, shuffle=True, drop_last=True), Adam 1e-3,
                  ``loss.item()`` every step, test-set evaluation after every epoch.
  * ``convlens``  ``convlens.train.train`` with ``convlens.train.TUTORIAL`` (Adam 1e-3,
                  batch 64, constant lr, no augmentation): uint8 data batched by index,
                  normalised per batch, test-set evaluation and an atomic run-directory
                  write after every epoch, first-layer snapshots every 50 steps.
  Both train seed-cnn from the same initial weights (torch.manual_seed(seed)) for the
  same number of steps (``drop_last`` in the plain loop, as convlens drops the last
  partial batch), with the same intra-op thread count. Each repetition runs both, in
  alternating order, so background load hits both alike. images/s is training images
  over the whole wall time of the call (evaluation and saving included); the ratio is
  convlens / plain per repetition (median reported). The same is reported per CPU
  second of the process (``time.process_time``), which other processes on a shared
  machine disturb much less than the wall clock.

Part 2, recipe: ``TrainConfig()`` (the demo's defaults: AdamW 3e-3, one-cycle, shifts of
  up to 2 pixels, 8 epochs) against ``TUTORIAL`` (Adam 1e-3, batch 64, 3 epochs): wall
  time and final test accuracy of each, trained by convlens.

Run:  python benchmarks/train.py [--data-dir DIR] [--repeats 5] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from convlens.data import ImageDataset, load_dataset
from convlens.models import build_model, get_config
from convlens.train import TUTORIAL, TrainConfig, train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-9k"


def plain_loop(train_data: ImageDataset, test_data: ImageDataset, epochs: int,
               seed: int) -> tuple[float, float, int, float]:
    """The tutorial's loop in plain PyTorch.

    Returns (wall seconds, CPU seconds, images trained, test accuracy).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    mean, std = train_data.mean[0], train_data.std[0]
    x = (train_data.images.float() / 255.0 - mean) / std  # (N, 1, 28, 28) float32, prepared once
    xt = (test_data.images.float() / 255.0 - mean) / std
    loader = DataLoader(TensorDataset(x, train_data.labels), batch_size=64, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = build_model("seed-cnn")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen, acc = 0, 0.0
    for _ in range(epochs):
        model.train()
        running = 0.0
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            running += loss.item()
            seen += len(yb)
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(xt), 1000):
                correct += int((model(xt[i:i + 1000]).argmax(1) == test_data.labels[i:i + 1000]).sum())
        acc = correct / len(xt)
    return time.perf_counter() - t0, time.process_time() - c0, seen, acc


def convlens_loop(train_data: ImageDataset, test_data: ImageDataset, cfg: TrainConfig,
                  out: Path) -> tuple[float, float, int, float, dict[str, Any]]:
    """convlens.train with ``cfg``.

    Returns (wall seconds, CPU seconds, images trained, test accuracy, metrics).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    run = train(get_config("seed-cnn"), train_data, test_data, out, cfg, device="cpu")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = run.metrics["completed_steps"]
    return wall, cpu, steps * cfg.batch_size, float(run.test_accuracy or 0.0), run.metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("CONVLENS_DATA_DIR", DEFAULT_DATA)))
    ap.add_argument("--repeats", type=int, default=None, help="repetitions of part 1 (default 5; 1 with --quick)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per part-1 run (default 3, the tutorial's)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads for both (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="1 repeat, 1 epoch, skip part 2")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs = 1
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5

    train_data = load_dataset("mnist", "train", data_dir=args.data_dir)
    test_data = load_dataset("mnist", "test", data_dir=args.data_dir)
    print(f"data: {args.data_dir} ({len(train_data)} train, {len(test_data)} test images)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), "
          f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f} at start")

    tut = replace(TUTORIAL, epochs=args.epochs, seed=args.seed)
    # warm up both paths once (allocator, kernels) on a slice, untimed
    small_train, small_test = train_data.subset(range(640)), test_data.subset(range(100))
    with tempfile.TemporaryDirectory() as tmp:
        plain_loop(small_train, small_test, 1, args.seed)
        convlens_loop(small_train, small_test, replace(tut, epochs=1), Path(tmp) / "warm")

    print(f"\nPart 1: training loop, seed-cnn, {tut.epochs} epoch(s) of the tutorial recipe "
          f"(Adam 1e-3, batch 64, no augmentation), {args.repeats} repetition(s), interleaved")
    rows: list[tuple[int, str, float, float, int, float]] = []
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = ["plain", "convlens"] if r % 2 == 0 else ["convlens", "plain"]
            got = {}
            for name in order:
                if name == "plain":
                    wall, cpu, n, acc = plain_loop(train_data, test_data, tut.epochs, args.seed)
                else:
                    wall, cpu, n, acc, _ = convlens_loop(train_data, test_data, tut, Path(tmp) / f"run{r}")
                got[name] = (wall, cpu)
                rows.append((r + 1, name, wall, cpu, n, acc))
            ratios["wall"].append(got["plain"][0] / got["convlens"][0])  # same images on both sides
            ratios["cpu"].append(got["plain"][1] / got["convlens"][1])
    print(f"{'rep':>3}  {'loop':<9} {'wall s':>7} {'images/s':>9} {'CPU s':>7} {'images/CPU s':>12} "
          f"{'images':>7} {'test acc':>9}")
    for r, name, wall, cpu, n, acc in rows:
        print(f"{r:>3}  {name:<9} {wall:>7.2f} {n / wall:>9.0f} {cpu:>7.2f} {n / cpu:>12.0f} {n:>7d} {acc:>9.2%}")
    for kind in ("wall", "cpu"):
        med = {name: statistics.median(n / (wall if kind == "wall" else cpu)
                                       for _, nm, wall, cpu, n, _ in rows if nm == name)
               for name in ("plain", "convlens")}
        what = "images/s (wall clock)" if kind == "wall" else "images per CPU second"
        print(f"{what}: median plain {med['plain']:.0f}, convlens {med['convlens']:.0f}; ratio convlens/plain "
              f"per repetition {', '.join(f'{x:.2f}' for x in ratios[kind])}, median "
              f"{statistics.median(ratios[kind]):.2f} (target >= 1.0)")

    if args.quick:
        return
    print("\nPart 2: the demo's default training against the tutorial recipe (convlens loop, seed "
          f"{args.seed})")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, cfg in (("tutorial (TUTORIAL)", replace(TUTORIAL, seed=args.seed)),
                           ("demo default (TrainConfig())", TrainConfig(seed=args.seed))):
            sec, _, _, acc, metrics = convlens_loop(train_data, test_data, cfg, Path(tmp) / label.split()[0])
            results.append((label, cfg, sec, acc, metrics))
    print(f"{'recipe':<30} {'epochs':>6} {'optimiser':>9} {'lr':>7} {'schedule':>9} {'shift':>5} "
          f"{'wall s':>7} {'test acc':>9}")
    for label, cfg, sec, acc, _ in results:
        print(f"{label:<30} {cfg.epochs:>6} {cfg.optimizer:>9} {cfg.lr:>7g} {cfg.schedule:>9} "
              f"{cfg.augment_shift:>5} {sec:>7.1f} {acc:>9.2%}")
    for label, _, _, _, metrics in results:
        per_epoch = ", ".join(f"{e['test_accuracy']:.2%}" for e in metrics["epochs"])
        print(f"  {label}: test accuracy per epoch {per_epoch}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
