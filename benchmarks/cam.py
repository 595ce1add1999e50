"""Grad-CAM (and Score-CAM) cost: convlens against the lower bound and the peer libraries.

One process; models built here in plain torch (no torchvision): the seed CNN (1x28x28,
Grad-CAM at ``conv2``) at batch 1 and 32, and ResNet-18 (3x224x224, Grad-CAM at
``layer4``) at batch 1 and 8. The target is class 3 everywhere.

Grad-CAM variants, timed interleaved (one timing of each, in rotating order, per
repetition) and summarised by the median, so that background load hits all alike:

* ``lower``       the lower bound: the forward pass written out by hand up to the target
                  layer and on to the logits (no hooks at all), then
                  ``torch.autograd.grad(logits[:, 3].sum(), activation)``; no CAM arithmetic.
* ``hook``        the least a library can do for any model: ``model(x)`` with one forward
                  hook keeping the layer's output, then the same ``autograd.grad`` (shown
                  for reference: what reaching an arbitrary layer costs).
* ``convlens``    ``convlens.explain.cam(model, x, layer=..., target=3)``: the raw
                  (layer-resolution) maps are computed; ``.maps``/``.normalised`` are not.
* ``+maps``       the same, then ``.normalised``: upsampled to the input size and
                  min-max normalised (work neither peer does).
* ``captum``      ``LayerGradCam(model, layer).attribute(x, target=3)`` (object built once).
* ``torch-cam``   ``with GradCAM(model, layer) as ex: ex(class_idx=3, scores=model(x))``,
                  its documented use (normalised maps at layer resolution).

Score-CAM on seed-cnn (conv2, K = 32 channels) against its own lower bound: one no_grad
forward pass of the 1 + K inputs (the image and its K masked copies, prepared beforehand).
Also shown: ``two passes``, a no_grad pass of the image and then one of its K masked
copies (masks prepared beforehand). Any Score-CAM needs the image's activations before it
can build the masks, so this is what an implementation can reach at best.

torch-cam is a benchmark-only dependency, installed without its dependencies so that it
pulls no torchvision (``pip install --no-deps torchcam``; its GradCAM imports only torch).

Run:  python benchmarks/cam.py [--quick] [--threads N] [--stat median|min] [--only gradcam|scorecam]
(prefix MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456 to keep glibc from
page-faulting freed memory back in; see allocator())
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import allocator
from convlens.explain import cam
from zoo import ResNet18, SeedCNN, seeded

TARGET = 3



def _timer(fn: Callable[[], object], inner: int) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) / inner

    return run


STAT: Callable[[list[float]], float] = statistics.median


def interleaved(variants: dict[str, Callable[[], object]], reps: int, inner: int,
                base: str = "lower") -> dict[str, float]:
    """Seconds per call of each variant (median, or ``--stat min``), timed in rotating order,
    and ``ratio <name>``: the median over repetitions of the variant's time divided by
    ``base``'s time in the same repetition (robust to load that drifts during the run); with
    ``--stat min``, the variant's minimum over ``base``'s minimum."""
    timers = {k: _timer(v, inner) for k, v in variants.items()}
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(3):  # warm-up
        for k in names:
            timers[k]()
    gc.collect()
    gc.disable()
    try:
        for rep in range(reps):
            for k in names[rep % len(names):] + names[: rep % len(names)]:
                times[k].append(timers[k]())
    finally:
        gc.enable()
    out = {k: STAT(v) for k, v in times.items()}
    for k, v in times.items():
        if STAT is min:  # the least disturbed time of each, compared
            out[f"ratio {k}"] = out[k] / out[base]
        else:
            out[f"ratio {k}"] = STAT([t / b for t, b in zip(v, times[base], strict=True)])
    return out


def seed_split(m: SeedCNN) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """The seed CNN's forward written out, split at conv2."""
    def head(x: torch.Tensor) -> torch.Tensor:
        return m.conv2(m.pool1(m.relu1(m.conv1(x))))

    def tail(a: torch.Tensor) -> torch.Tensor:
        return m.fc(torch.flatten(m.pool2(m.relu2(a)), 1))

    return head, tail


def resnet_split(m: ResNet18) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """ResNet-18's forward written out, split at layer4."""
    def head(x: torch.Tensor) -> torch.Tensor:
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))

    def tail(a: torch.Tensor) -> torch.Tensor:
        return m.fc(torch.flatten(m.avgpool(a), 1))

    return head, tail


def bench_gradcam(model: nn.Module, split: tuple, layer: str, x: torch.Tensor, reps: int, inner: int) -> dict[str, float]:
    from captum.attr import LayerGradCam
    from torchcam.methods import GradCAM

    head, tail = split
    module = dict(model.named_modules())[layer]
    lgc = LayerGradCam(model, module)

    def lower() -> object:
        a = head(x)
        return torch.autograd.grad(tail(a)[:, TARGET].sum(), a)

    def hooked() -> object:
        kept: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda m, i, o: kept.append(o))
        try:
            out = model(x)
        finally:
            handle.remove()
        return torch.autograd.grad(out[:, TARGET].sum(), kept[0])

    def ours() -> object:
        return cam(model, x, layer=layer, target=TARGET)

    def ours_maps() -> object:
        return cam(model, x, layer=layer, target=TARGET).normalised

    def captum() -> object:
        return lgc.attribute(x, target=TARGET)

    def torchcam() -> object:
        with GradCAM(model, layer) as extractor:
            return extractor(class_idx=TARGET, scores=model(x))

    # the same maps, or the comparison means nothing
    r = cam(model, x, layer=layer, target=TARGET)
    torch.testing.assert_close(r.raw, captum()[:, 0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(r.normalised.shape[-2:], x.shape[-2:])
    variants = {"lower": lower, "hook": hooked, "convlens": ours, "+maps": ours_maps, "captum": captum,
                "torch-cam": torchcam}
    return interleaved(variants, reps, inner)


def bench_scorecam(model: nn.Module, layer: str, x: torch.Tensor, reps: int, inner: int) -> dict[str, float]:
    import torch.nn.functional as F

    from convlens.explain.base import normalise

    with torch.no_grad():
        a = {}
        h = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: a.setdefault("a", o))
        try:
            model(x)
        finally:
            h.remove()
        k = a["a"].shape[1]
        up = F.interpolate(a["a"].transpose(0, 1), size=x.shape[-2:], mode="bilinear", align_corners=False)
        masks = normalise(up[:, 0]).unsqueeze(1)  # (K, 1, H, W)
        batch = torch.cat([x, x * masks])  # 1 + K inputs

    def lower() -> object:
        with torch.no_grad():
            return model(batch)

    def two_passes() -> object:
        with torch.no_grad():
            return model(x), model(batch[1:])

    def ours() -> object:
        return cam(model, x, method="scorecam", layer=layer, target=TARGET, batch_size=k)

    return interleaved({"lower": lower, "two passes": two_passes, "convlens": ours}, reps, inner)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--only", choices=["gradcam", "scorecam"], default=None)
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="summary of the repetitions; min is the least disturbed by other processes")
    args = ap.parse_args()
    global STAT
    STAT = min if args.stat == "min" else statistics.median
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = 0.1 if args.quick else 1.0
    torch.manual_seed(0)
    seed = seeded(SeedCNN())
    resnet = seeded(ResNet18())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores, {allocator()}; "
        f"{args.stat} of interleaved repetitions"
    )
    if args.only in (None, "gradcam"):
        configs = [
            ("seed-cnn", seed, seed_split(seed), "conv2", (1, 1, 28, 28), 1500, 10),
            ("seed-cnn", seed, seed_split(seed), "conv2", (32, 1, 28, 28), 600, 2),
            ("resnet-18", resnet, resnet_split(resnet), "layer4", (1, 3, 224, 224), 200, 1),
            ("resnet-18", resnet, resnet_split(resnet), "layer4", (8, 3, 224, 224), 60, 1),
        ]
        print("\nGrad-CAM: cells are the ratio to the lower bound (per repetition, then summarised), then "
              "milliseconds per call")
        header = (f"{'model':<10} {'batch':>5}  {'lower':>9}  {'hook':>13}  {'convlens':>13}  {'+maps':>13}  "
                  f"{'captum':>13}  {'torch-cam':>13}  convlens/best peer")
        print(header)
        print("-" * len(header))
        for name, model, split, layer, shape, reps, inner in configs:
            x = torch.randn(shape)
            t = bench_gradcam(model, split, layer, x, max(5, int(reps * scale)), inner)
            low = t["lower"]

            def cell(k: str, t: dict[str, float] = t) -> str:
                return f"{t['ratio ' + k]:5.3f}x {t[k] * 1e3:6.2f}"

            best = min(t["captum"], t["torch-cam"])
            print(f"{name:<10} {shape[0]:>5}  {low * 1e3:6.2f} ms  {cell('hook')}  {cell('convlens')}  {cell('+maps')}  "
                  f"{cell('captum')}  {cell('torch-cam')}  {t['convlens'] / best:5.3f}x")
    if args.only in (None, "scorecam"):
        print("\nScore-CAM (seed-cnn, conv2, K = 32): ratio to one no_grad forward of the 1 + K inputs")
        for shape, reps, inner in [((1, 1, 28, 28), 400, 3)]:
            x = torch.randn(shape)
            t = bench_scorecam(seed, "conv2", x, max(5, int(reps * scale)), inner)
            print(f"seed-cnn   batch {shape[0]}: lower {t['lower'] * 1e3:6.2f} ms, two passes "
                  f"{t['ratio two passes']:5.3f}x {t['two passes'] * 1e3:6.2f} ms, convlens "
                  f"{t['ratio convlens']:5.3f}x {t['convlens'] * 1e3:6.2f} ms "
                  f"({t['convlens'] / t['two passes']:5.3f}x the two passes)")
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
