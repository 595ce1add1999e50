"""Checking that a state dict fits a model, with a message that names the tensors."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor


def brief(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def state_dict_mismatch(own: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> str | None:
    """``None`` if ``given`` has exactly the names and shapes of ``own``, else what differs.

    >>> import torch
    >>> state_dict_mismatch({"w": torch.zeros(2)}, {"w": torch.zeros(3), "b": torch.zeros(1)})
    'unexpected 1: b'
    >>> state_dict_mismatch({"w": torch.zeros(2)}, {"w": torch.zeros(3)})
    'shapes differ for w (3,) vs (2,)'
    """
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {brief(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {brief(unexpected)}")
        return "; ".join(parts)
    wrong = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if given[k].shape != v.shape]
    if wrong:
        return f"shapes differ for {brief(wrong, 3)}"
    return None
