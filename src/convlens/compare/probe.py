"""Functional evidence beside CKA: how well a linear classifier reads the classes from a layer.

Davari et al. (2023) show that CKA can be moved a lot without changing what a network
does, so a similarity figure should stand beside what each layer is good for. For every
compared layer of each model, a linear probe (one ``nn.Linear`` on the layer's features,
standardised with the training split's mean and standard deviation) is fitted on the
training split with Adam and cross-entropy, and scored on the test split. All probes of
both models train together, on the same shuffled batches of one two-model pass per epoch.

>>> import torch
>>> from torch import nn
>>> m = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
>>> x = torch.randn(64, 1, 2, 2); y = (x.flatten(1)[:, 0] > 0).long()
>>> report = linear_probe(m, m, [(x, y)], [(x, y)], ["0"], epochs=30, lr=0.05, progress=False)
>>> report.accuracy["a"]["0"] > 0.9
True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from convlens.errors import ConfigError, positive_int
from convlens.inspect.pair import Side, check_labels, stream_pair

if TYPE_CHECKING:
    from convlens.inspect.passes import Data

__all__ = ["ProbeReport", "linear_probe"]


@dataclass
class ProbeReport:
    """Test accuracy of a linear probe on each layer of each model (``accuracy[side][layer]``)."""

    accuracy: dict[Side, dict[str, float]]
    train_accuracy: dict[Side, dict[str, float]]
    epochs: int
    n_train: int
    n_test: int

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "train_accuracy": self.train_accuracy, "epochs": self.epochs,
                "n_train": self.n_train, "n_test": self.n_test}


class _Probes:
    """One standardised linear probe per (side, layer); ``mode``: "stats", "train" or "test"."""

    def __init__(self, layers: dict[Side, list[str]], classes: int, lr: float, seed: int) -> None:
        self.layers, self.classes, self.lr, self.seed = layers, classes, lr, seed
        self.mode = "stats"
        self.feats: dict[tuple[Side, str], Tensor] = {}
        self.sums: dict[tuple[Side, str], tuple[int, Tensor, Tensor]] = {}  # n, Σx, Σx²
        self.probes: dict[tuple[Side, str], nn.Linear] = {}
        self.opts: dict[tuple[Side, str], torch.optim.Optimizer] = {}
        self.scale: dict[tuple[Side, str], tuple[Tensor, Tensor]] = {}
        self.right: dict[tuple[Side, str], int] = {}
        self.count = 0

    def update(self, side: Side, key: str, value: Tensor, offset: int) -> None:
        self.feats[(side, key)] = value.detach().reshape(value.shape[0], -1).float().clone()

    def start(self, mode: str) -> None:
        self.mode, self.right, self.count = mode, {}, 0
        if mode == "train" and not self.probes:
            gen = torch.Generator().manual_seed(self.seed)
            for k, (n, s, s2) in self.sums.items():
                mean = s / n
                std = (s2 / n - mean**2).clamp_min(0).sqrt()
                self.scale[k] = (mean.float(), torch.where(std > 1e-8, std, torch.ones_like(std)).float())
                probe = nn.Linear(mean.numel(), self.classes).to(s.device)
                with torch.no_grad():
                    probe.weight.copy_(torch.randn(probe.weight.shape, generator=gen) * 0.01)
                    probe.bias.zero_()
                self.probes[k] = probe
                self.opts[k] = torch.optim.Adam(probe.parameters(), lr=self.lr)

    def finish(self, offset: int, x: Tensor, y: Tensor | None, out_a: Tensor, out_b: Tensor) -> None:
        labels = check_labels(y, x.shape[0])
        feats, self.feats = self.feats, {}
        self.count += x.shape[0]
        for k, f in feats.items():
            if self.mode == "stats":
                f64 = f.double()
                if k in self.sums:
                    n, s, s2 = self.sums[k]
                    self.sums[k] = (n + f.shape[0], s + f64.sum(0), s2 + (f64 * f64).sum(0))
                else:
                    self.sums[k] = (f.shape[0], f64.sum(0), (f64 * f64).sum(0))
                continue
            mean, std = self.scale[k]
            z = (f - mean) / std
            target = labels.to(z.device)
            with torch.enable_grad():
                logits = self.probes[k](z)
                if self.mode == "train":
                    loss = nn.functional.cross_entropy(logits, target)
                    self.opts[k].zero_grad()
                    loss.backward()
                    self.opts[k].step()
            self.right[k] = self.right.get(k, 0) + int((logits.detach().argmax(1) == target).sum())

    def accuracy(self) -> dict[Side, dict[str, float]]:
        return {side: {k: self.right.get((side, k), 0) / max(self.count, 1) for k in names}
                for side, names in self.layers.items()}


def _shuffled(data: Data, batch_size: int, gen: torch.Generator) -> Data:
    batches = getattr(data, "batches", None)
    if callable(batches):
        def epoch() -> Iterator[Any]:
            yield from batches(batch_size, shuffle=True, generator=gen)
        return epoch()
    return data


def linear_probe(
    model_a: nn.Module,
    model_b: nn.Module,
    train: Data,
    test: Data,
    layers_a: Sequence[str],
    layers_b: Sequence[str] | None = None,
    *,
    classes: int | None = None,
    epochs: int = 4,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
) -> ProbeReport:
    """Fit a linear probe on each layer of each model on ``train``; score it on ``test``.

    ``train`` and ``test`` are labelled (ImageDatasets, or iterables of ``(x, y)``
    batches); an ImageDataset is reshuffled every epoch with a generator seeded by ``seed``.
    ``classes`` defaults to the dataset's class count, else the models' output width.
    """
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr!r}")
    lb = list(layers_a if layers_b is None else layers_b)
    layers: dict[Side, list[str]] = {"a": list(layers_a), "b": lb}
    if classes is None:
        names = getattr(train, "classes", None)
        classes = len(names) if names else None
    if classes is None:
        from convlens.inspect.pair import _placed, iter_labelled

        x, _ = next(iter_labelled(train, 1))
        with torch.no_grad():
            classes = int(model_a(_placed(model_a, x[:1])).shape[1])
    probes = _Probes(layers, positive_int("classes", classes), lr, seed)
    gen = torch.Generator().manual_seed(seed)

    def run(data: Data, what: str) -> int:
        n, _ = stream_pair(model_a, model_b, data, layers["a"], layers["b"], [probes], batch_size=batch_size,
                           progress=progress, description=what)
        return n

    probes.start("stats")
    n_train = run(train, "probe statistics")
    for epoch in range(epochs):
        probes.start("train")
        run(_shuffled(train, batch_size, gen), f"probe epoch {epoch + 1}/{epochs}")
    train_acc = probes.accuracy()  # of the last epoch, while training
    probes.start("test")
    n_test = run(test, "probe test")
    return ProbeReport(probes.accuracy(), train_acc, epochs, n_train, n_test)
