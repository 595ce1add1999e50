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
  alternating order, so background load hits both alike; images/s is training images
  over the whole wall time of the call (evaluation and saving included), and the
  ratio is convlens / plain per repetition (median reported).

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


def plain_loop(train_data: ImageDataset, test_data: ImageDataset, epochs: int, seed: int) -> tuple[float, int, float]:
    """The tutorial's loop in plain PyTorch. Returns (seconds, images trained, test accuracy)."""
    t0 = time.perf_counter()
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
    return time.perf_counter() - t0, seen, acc


def convlens_loop(train_data: ImageDataset, test_data: ImageDataset, cfg: TrainConfig,
                  out: Path) -> tuple[float, int, float, dict[str, Any]]:
    """convlens.train with ``cfg``. Returns (seconds, images trained, test accuracy, metrics)."""
    t0 = time.perf_counter()
    run = train(get_config("seed-cnn"), train_data, test_data, out, cfg, device="cpu")
    seconds = time.perf_counter() - t0
    steps = run.metrics["completed_steps"]
    return seconds, steps * cfg.batch_size, float(run.test_accuracy or 0.0), run.metrics


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
    rows: list[tuple[int, str, float, int, float]] = []
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = ["plain", "convlens"] if r % 2 == 0 else ["convlens", "plain"]
            ips = {}
            for name in order:
                if name == "plain":
                    sec, n, acc = plain_loop(train_data, test_data, tut.epochs, args.seed)
                else:
                    sec, n, acc, _ = convlens_loop(train_data, test_data, tut, Path(tmp) / f"run{r}")
                ips[name] = n / sec
                rows.append((r + 1, name, sec, n, acc))
            ratios.append(ips["convlens"] / ips["plain"])
    print(f"{'rep':>3}  {'loop':<9} {'seconds':>8} {'images':>7} {'images/s':>9} {'test acc':>9}")
    for r, name, sec, n, acc in rows:
        print(f"{r:>3}  {name:<9} {sec:>8.2f} {n:>7d} {n / sec:>9.0f} {acc:>9.2%}")
    med = {name: statistics.median(n / sec for _, nm, sec, n, _ in rows if nm == name) for name in ("plain", "convlens")}
    print(f"median images/s: plain {med['plain']:.0f}, convlens {med['convlens']:.0f}")
    print(f"ratio convlens/plain per repetition: {', '.join(f'{x:.2f}' for x in ratios)}; "
          f"median {statistics.median(ratios):.2f} (target >= 1.0)")

    if args.quick:
        return
    print("\nPart 2: the demo's default training against the tutorial recipe (convlens loop, seed "
          f"{args.seed})")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, cfg in (("tutorial (TUTORIAL)", replace(TUTORIAL, seed=args.seed)),
                           ("demo default (TrainConfig())", TrainConfig(seed=args.seed))):
            sec, n, acc, metrics = convlens_loop(train_data, test_data, cfg, Path(tmp) / label.split()[0])
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
