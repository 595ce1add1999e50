"""Run a user's model for inspection and hand it back exactly as it came."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import torch
from torch import nn


class eval_mode:
    """Put every module in eval mode for the block; restore each ``training`` flag after.

    Explanations describe the model's predictions, so dropout is off and batch norm uses its
    running statistics (which therefore are not updated either). The one helper for this
    in convlens (torch-cam copies it in three places).
    """

    def __init__(self, model: nn.Module) -> None:
        self.training = [m for m in model.modules() if m.training]

    def __enter__(self) -> None:
        for m in self.training:
            m.training = False

    def __exit__(self, *exc: object) -> None:
        for m in self.training:
            m.training = True


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """:class:`eval_mode` and no gradients for the block.

    Inspection must not update BatchNorm running statistics or sample dropout masks.
    """
    with eval_mode(model), torch.no_grad():
        yield model


def device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the model's parameters (or buffers) live and their floating dtype."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()
