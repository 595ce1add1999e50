"""What the benchmark scripts share."""

from __future__ import annotations

import os


def allocator() -> str:
    """How glibc's allocator is set up for this run. By default it hands large freed blocks
    back to the OS and page-faults them in again later, at moments that depend on what ran
    before: with ResNet-18 at batch 8 that moves single variants by several per cent.
    ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456`` keeps them (no page
    faults in any variant), which measures the work alone."""
    keys = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")
    set_ = [f"{k}={os.environ[k]}" for k in keys if k in os.environ]
    return "glibc malloc " + (" ".join(set_) if set_ else "default")
