"""Feature visualisation and training-time tracking, each against its baseline in the same run.

Part 1, batching: ``convlens.featvis`` over all 32 channels of seed-cnn's conv2 as one
  batch (one optimisation of 32 images) against 32 one-channel runs, the same steps and
  settings (Fourier parametrisation, jitter/scale/rotation), in alternating order per
  repetition. Target: the batched run at least 5x faster.

Part 2, tracking: the demo's training (``TrainConfig()``: 8 epochs of AdamW, one-cycle,
  shifts) of seed-cnn on the offline MNIST copy, with a ``Tracker`` at the default cadence
  (every ``DEFAULT_EVERY`` steps, TensorBoard events too when installed) against none,
  alternating which goes first. Target: tracking adds at most 5% to the training time.
  Both wall and CPU seconds of the process are reported (the CPU figure is disturbed
  much less by other processes on a shared machine).

Run:  python benchmarks/featvis.py [--data-dir DIR] [--steps 256] [--repeats 3] [--epochs 8] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _common import allocator
from convlens.data import load_dataset
from convlens.inspect.featvis import featvis
from convlens.models import build_model, get_config
from convlens.train import TrainConfig, train
from convlens.train.tracking import DEFAULT_EVERY, Tracker, tensorboard_available

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-9k"


def _timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def part1(steps: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = build_model("seed-cnn").eval()
    shape = (1, 28, 28)
    featvis(model, "conv2", [0, 1], steps=4, input_shape=shape)  # warm-up, untimed
    print(f"\nPart 1: featvis of seed-cnn conv2, 32 channels, {steps} steps, {repeats} repetition(s), interleaved")
    rows = []
    for r in range(repeats):
        order = ["batched", "one-by-one"] if r % 2 == 0 else ["one-by-one", "batched"]
        got = {}
        for name in order:
            if name == "batched":
                got[name] = _timed(lambda: featvis(model, "conv2", list(range(32)), steps=steps, input_shape=shape))
            else:
                got[name] = _timed(lambda: [featvis(model, "conv2", [c], steps=steps, input_shape=shape)
                                            for c in range(32)])
        rows.append(got)
        print(f"  rep {r + 1}: batched {got['batched'][0]:.2f} s wall ({got['batched'][1]:.2f} CPU s), one-by-one "
              f"{got['one-by-one'][0]:.2f} s wall ({got['one-by-one'][1]:.2f} CPU s)")
    for i, kind in enumerate(("wall", "CPU")):
        ratios = [g["one-by-one"][i] / g["batched"][i] for g in rows]
        print(f"speed-up batched / one-by-one ({kind} time): {', '.join(f'{x:.1f}' for x in ratios)}; median "
              f"{statistics.median(ratios):.1f}x (target >= 5x)")


def part2(data_dir: Path, epochs: int, repeats: int, every: int) -> None:
    train_data = load_dataset("mnist", "train", data_dir=data_dir)
    test_data = load_dataset("mnist", "test", data_dir=data_dir)
    cfg = TrainConfig(epochs=epochs)
    print(f"\nPart 2: the demo's training ({epochs} epochs, {len(train_data)} images) with a Tracker every "
          f"{every} steps (TensorBoard: {'yes' if tensorboard_available() else 'no'}) against none, "
          f"{repeats} repetition(s), alternating")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        small = (train_data.subset(range(640)), test_data.subset(range(100)))  # warm-up of both paths, untimed
        for cbs in ([], [Tracker(5)]):
            train(get_config("seed-cnn"), *small, Path(tmp) / f"warm{len(cbs)}", TrainConfig(epochs=1), device="cpu",
                  callbacks=cbs)
        for r in range(repeats):
            order = ["none", "tracked"] if r % 2 == 0 else ["tracked", "none"]
            got = {}
            for name in order:
                callbacks = [Tracker(every)] if name == "tracked" else []
                out = Path(tmp) / f"{name}{r}"
                got[name] = _timed(lambda: train(get_config("seed-cnn"), train_data, test_data, out,  # noqa: B023
                                                 cfg, device="cpu", callbacks=callbacks))  # noqa: B023
                if callbacks:
                    got["records"] = (len(callbacks[0].records), 0.0)
            rows.append(got)
            print(f"  rep {r + 1}: none {got['none'][0]:.1f} s wall ({got['none'][1]:.1f} CPU s), tracked "
                  f"{got['tracked'][0]:.1f} s wall ({got['tracked'][1]:.1f} CPU s), {got['records'][0]:.0f} records")
    for i, kind in enumerate(("wall", "CPU")):
        extra = [g["tracked"][i] / g["none"][i] - 1 for g in rows]
        print(f"extra time with tracking ({kind}): {', '.join(f'{x:+.1%}' for x in extra)}; median "
              f"{statistics.median(extra):+.1%} (target <= +5%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("CONVLENS_DATA_DIR", DEFAULT_DATA)))
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="repetitions of part 1")
    ap.add_argument("--train-repeats", type=int, default=1, help="repetitions of part 2")
    ap.add_argument("--epochs", type=int, default=8, help="epochs of part 2 (the demo's: 8)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--every", type=int, default=DEFAULT_EVERY, help="tracking cadence of part 2 (default: the default)")
    ap.add_argument("--skip-featvis", action="store_true")
    ap.add_argument("--skip-training", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), {os.cpu_count()} CPU(s), "
          f"{allocator()}, load average {os.getloadavg()[0]:.2f} at start")
    if not args.skip_featvis:
        part1(args.steps, args.repeats)
    if not args.skip_training:
        part2(args.data_dir, args.epochs, args.train_repeats, args.every)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
