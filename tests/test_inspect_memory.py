"""Acceptance: streaming statistics and top-k over all 9,000 digits stay within memory.

Runs benchmarks/memory.py in a fresh process (so earlier tests' allocations do not blur the
measurement) and checks its verdict and numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_streaming_passes_over_9000_digits_stay_below_dataset_plus_300mb(mnist_dir: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "memory.py"), "--json", "--data-dir", str(mnist_dir)],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["inputs"] == 9000 and r["layers"] == ["conv1", "conv2"]
    for name, p in r["passes"].items():
        assert p["n_inputs"] == 9000, name
        assert p["above_base_mb"] <= r["dataset_mb"] + 300, (name, p)
    assert r["ok"]
