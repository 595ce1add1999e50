"""The cost of ``convlens.audit`` against the work it cannot avoid, in one process.

The audit of N images runs, per batch: one no_grad forward pass of each variant (5 for
1-channel data, 9 for 3-channel; the original one with the feature-map reducers attached)
and one forward + backward pass for Grad-CAM and saliency together. The baseline does that
same work by hand with no convlens code: the variant images prepared beforehand, ``V``
plain ``model(x)`` calls under ``torch.no_grad()``, then one ``model(x)`` with the input
and a forward hook's activation requiring grad and one ``torch.autograd.grad`` of the
predicted logits. The ratio ``audit / baseline`` is what building the variants, the masks'
arithmetic, the channel energies and the bookkeeping cost on top.

Data: seed-cnn (seed 0, untrained weights) on the 1,500 test digits of the offline MNIST
(``CONVLENS_DATA_DIR``), derived masks; timings interleaved, median of ``--reps``.

Run:  python benchmarks/audit.py [--reps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import allocator
from convlens.data import load_dataset
from convlens.data.masks import foreground_masks
from convlens.diagnose import audit
from convlens.diagnose._variants import BACKGROUND_VARIANTS, partners, variant_batch
from zoo import SeedCNN, seeded


def baseline(model: torch.nn.Module, data, variants: list[torch.Tensor], batch: int) -> None:
    acts: list[torch.Tensor] = []
    handle = model.pool2.register_forward_hook(lambda m, a, out: acts.append(out))
    try:
        for start in range(0, len(data), batch):
            with torch.no_grad():
                for v in variants:
                    model(v[start:start + batch])
            acts.clear()
            x = variants[0][start:start + batch].clone().requires_grad_(True)
            logits = model(x)
            score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            torch.autograd.grad(score, [acts[0], x])
    finally:
        handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", "test")
    model = seeded(SeedCNN()).eval()
    masks = torch.from_numpy(foreground_masks(data.images))
    j = {k: torch.from_numpy(v) for k, v in partners(data.labels.numpy(), 0).items()}
    variants = [data.normalise(variant_batch(name, data.images, masks, data.images[j[name]] if name in j else None,
                                             masks[j[name]] if name in j else None)) for name in BACKGROUND_VARIANTS]
    times: dict[str, list[float]] = {"baseline": [], "audit": []}
    for _ in range(args.reps):
        for name in times:
            t = time.perf_counter()
            if name == "baseline":
                baseline(model, data, variants, args.batch)
            else:
                audit(model, data, batch_size=args.batch)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"audit of {len(data)} MNIST test images, seed-cnn, batch {args.batch}, {args.threads} thread(s), {allocator()}")
    for k, v in med.items():
        print(f"  {k:9s} {v * 1000:8.1f} ms  ({len(data) / v:,.0f} images/s)")
    print(f"  ratio audit / baseline: {med['audit'] / med['baseline']:.2f}")


if __name__ == "__main__":
    main()
