"""The training loop: seeded, deterministic on CPU, checkpointed every epoch.

Data stays in memory as uint8 tensors; each epoch is one
:meth:`ImageDataset.batches <convlens.data.ImageDataset.batches>` pass (one seeded
permutation, each batch gathered by one index tensor, shifted and normalised on the
training device as a whole: no per-sample Python work). After every completed epoch the run directory is rewritten atomically,
so Ctrl-C leaves a valid run that holds the last completed epoch.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from convlens._atomic import claim
from convlens.data.fingerprint import fingerprint
from convlens.inspect._state import eval_mode
from convlens.models.builder import build_cnn
from convlens.models.config import CNNConfig
from convlens.models.run import (
    DataSpec,
    Run,
    RunConfig,
    ensure_replaceable,
    library_versions,
    load_run,
    save_run,
)
from convlens.train.callbacks import Callback
from convlens.train.config import TrainConfig
from convlens.train.device import resolve_device

if TYPE_CHECKING:
    from convlens.data.dataset import ImageDataset


def evaluate(model: nn.Module, dataset: ImageDataset, *, batch_size: int = 1000,
             device: torch.device | str = "cpu") -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``dataset``."""
    total_loss, correct, n = 0.0, 0, 0
    with eval_mode(model), torch.inference_mode():
        for x, y in dataset.batches(batch_size, device=device):
            logits = model(x)
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    return total_loss / max(n, 1), correct / max(n, 1)


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    return None


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def one_cycle(step: int, total: int, *, warmup: float = 0.25, start: float = 0.04, end: float = 1e-3) -> float:
    """Learning-rate factor at ``step`` (0-based) of ``total``: linear warm-up from
    ``start`` to 1 over the first ``warmup`` fraction of the steps (at least one step),
    then cosine decay to ``end``. Defined for every ``total >= 1``, unlike
    ``torch.optim.lr_scheduler.OneCycleLR``, which fails on very short runs."""
    warm = max(1, round(warmup * total))
    if step < warm:
        return start + (1.0 - start) * (step + 1) / warm
    rest = max(1, total - warm)
    t = min(1.0, (step - warm + 1) / rest)
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: one_cycle(s, total))
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return None


def train(
    model_config: CNNConfig,
    train_data: ImageDataset,
    test_data: ImageDataset,
    out: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    device: str = "auto",
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
) -> Run:
    """Train a model from ``model_config`` and write the run directory ``out``.

    ``train_data`` and ``test_data`` are :class:`convlens.data.ImageDataset` objects.
    Returns the loaded :class:`~convlens.models.run.Run`. The same seed and config give
    bit-identical weights on the CPU.

    On ``KeyboardInterrupt`` the run directory holds the last completed epoch (or
    nothing, if none completed) and the interrupt propagates.

    ``out`` is claimed for the whole training (a second process writing it fails at
    once) and checked before any work: an earlier run there is replaced, when the first
    epoch completes, only with ``overwrite``; a directory holding files convlens did not
    write is never replaced (:func:`convlens.models.run.ensure_replaceable`).
    """
    out = Path(out)
    cfg = config or TrainConfig()
    cfg.validate()
    with claim(out):
        ensure_replaceable(out, overwrite=overwrite)
        return _train(model_config, train_data, test_data, out, cfg, device=device, callbacks=callbacks)


def _train(model_config: CNNConfig, train_data: ImageDataset, test_data: ImageDataset, out: Path,
           cfg: TrainConfig, *, device: str, callbacks: Sequence[Callback]) -> Run:
    from convlens.data.transforms import random_shift

    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    model = build_cnn(model_config).to(dev)
    model.train()
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)

    n = len(train_data)
    # incomplete last batches are dropped, so every step sees batch_size images
    # (a dataset smaller than one batch is one step of all of it)
    drop_last = n >= cfg.batch_size
    steps_per_epoch = n // cfg.batch_size if drop_last else 1
    epoch_images = steps_per_epoch * cfg.batch_size if drop_last else n
    total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, total_steps)
    shift = cfg.augment_shift

    def augment(xb: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) uint8 on the device
        return random_shift(xb, shift, gen)

    first = _first_conv(model)
    snapshots: dict[int, torch.Tensor] = {}
    if first is not None and cfg.snapshot_every:
        snapshots[0] = first[1].weight.detach().cpu().clone()

    run_config = RunConfig(
        model=model_config,
        data=DataSpec(
            name=train_data.name, source=str(train_data.source), classes=tuple(train_data.classes),
            mean=tuple(float(m) for m in train_data.mean), std=tuple(float(s) for s in train_data.std),
            train_size=len(train_data), test_size=len(test_data),
            fingerprints={split: fingerprint(d.images, d.labels).to_dict()
                          for split, d in (("train", train_data), ("test", test_data))},
        ),
        seed=cfg.seed,
        train={**cfg.to_dict(), "device": str(dev)},
        versions=library_versions(),
    )
    epochs: list[dict[str, Any]] = []
    for cb in callbacks:  # a callback that watches the model (convlens.train.tracking.Tracker) is shown it
        bind = getattr(cb, "on_model", None)
        if bind is not None:
            bind(model, out, test_data)
    for cb in callbacks:
        cb.on_start(total_steps, steps_per_epoch)
    step, epoch, started = 0, 0, time.perf_counter()
    try:
        while step < total_steps:
            epoch += 1
            loss_sum, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
            epoch_batches = train_data.batches(cfg.batch_size, shuffle=True, generator=gen, device=dev,
                                               drop_last=drop_last, augment=augment if shift else None)
            for x, y in itertools.islice(epoch_batches, total_steps - step):  # steps mode may end mid-epoch
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                step += 1
                loss_sum += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                if first is not None and cfg.snapshot_every and step % cfg.snapshot_every == 0:
                    snapshots[step] = first[1].weight.detach().cpu().clone()
                ips = seen / max(time.perf_counter() - t0, 1e-9)
                for cb in callbacks:
                    cb.on_step(step, {"loss": loss_sum / seen, "acc": correct / seen, "ips": ips, "epoch": epoch})
            train_seconds = time.perf_counter() - t0
            if not math.isfinite(loss_sum):
                from convlens.errors import ConfigError

                kept = f"{out} keeps epoch {epoch - 1}" if epochs else "no run was written"
                raise ConfigError(
                    f"training diverged in epoch {epoch} (loss is not finite); {kept}; lower the learning rate (--lr)"
                )
            test_loss, test_acc = evaluate(model, test_data, batch_size=cfg.eval_batch_size, device=dev)
            record = {
                "epoch": epoch if seen == epoch_images else round(epoch - 1 + seen / epoch_images, 4),
                "step": step,
                "train_loss": loss_sum / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "test_loss": test_loss,
                "test_accuracy": test_acc,
                "images_per_second": seen / max(train_seconds, 1e-9),
                "seconds": train_seconds,
            }
            epochs.append(record)
            if first is not None and cfg.snapshot_every and step not in snapshots:
                snapshots[step] = first[1].weight.detach().cpu().clone()
            metrics = {
                "epochs": epochs,
                "total_steps": total_steps,
                "completed_steps": step,
                "complete": step >= total_steps,
                "wall_seconds": time.perf_counter() - started,
            }
            save_run(out, run_config, model.state_dict(), metrics, snapshots,  # checked by train(): ours to replace
                     snapshot_layer=first[0] if first else "", overwrite=True)
            for cb in callbacks:
                cb.on_epoch(record)
    finally:
        for cb in callbacks:
            cb.on_end()
    return load_run(out)
