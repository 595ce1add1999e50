"""Run a user's model for inspection and hand it back exactly as it came."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no gradients for the block; every module's ``training`` flag restored.

    The one helper every inspection pass uses (torch-cam copies this in three places).
    Inspection must not update BatchNorm running statistics or sample dropout masks.
    """
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            yield model
    finally:
        for module, flag in flags:
            module.training = flag


def device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the model's parameters (or buffers) live and their floating dtype."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()
