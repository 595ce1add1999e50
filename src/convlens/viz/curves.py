"""The training curve: losses and test accuracy per epoch."""

from __future__ import annotations

from typing import Any

from convlens.errors import ConfigError
from convlens.viz.describe import fmt
from convlens.viz.figure import Explained, new_figure
from convlens.viz.palettes import OKABE_ITO


def training_curve(metrics: dict[str, Any], *, title: str = "training") -> Explained:
    """Train loss, test loss (left axis) and test accuracy (right axis) per epoch."""
    epochs = metrics.get("epochs") or []
    if not epochs:
        raise ConfigError("the run has no completed epoch to plot")
    x = [e["epoch"] for e in epochs]
    train_loss = [e["train_loss"] for e in epochs]
    test_loss = [e["test_loss"] for e in epochs]
    acc = [100 * e["test_accuracy"] for e in epochs]
    fig = new_figure(6.0, 3.4)
    ax = fig.add_subplot()
    ax.plot(x, train_loss, color=OKABE_ITO[0], marker="o", ms=3, label="train loss (epoch mean)")
    ax.plot(x, test_loss, color=OKABE_ITO[4], marker="s", ms=3, ls="--", label="test loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax2 = ax.twinx()
    ax2.plot(x, acc, color=OKABE_ITO[2], marker="^", ms=3, ls=":", label="test accuracy")
    ax2.set_ylabel("test accuracy (%)")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [str(line.get_label()) for line in lines], fontsize=7, loc="center right")
    ax.set_title(title, fontsize=10)
    best = max(range(len(acc)), key=acc.__getitem__)
    caption = (
        f"Training over {x[-1]:g} epochs: mean train loss per epoch and test loss (left axis), "
        f"test accuracy (right axis). Final test accuracy {acc[-1]:.2f}%."
    )
    alt = (
        f"Line chart over {len(x)} epochs. Train loss falls from {fmt(train_loss[0])} to {fmt(train_loss[-1])}; "
        f"test loss from {fmt(test_loss[0])} to {fmt(test_loss[-1])}. Test accuracy rises from {acc[0]:.2f}% "
        f"to {acc[-1]:.2f}% (best {acc[best]:.2f}% at epoch {x[best]:g})."
    )
    return Explained(fig, caption, alt, title=title, data={"epochs": x, "train_loss": train_loss,
                                                          "test_loss": test_loss, "test_accuracy": acc})
