import os
from pathlib import Path

import pytest

from convlens._atomic import atomic_dir, write_text_atomic


def test_atomic_dir_has_the_permissions_mkdir_would_give(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with atomic_dir(tmp_path / "atomic") as tmp:
        (tmp / "f").write_text("x")
    assert os.stat(tmp_path / "atomic").st_mode == os.stat(tmp_path / "plain").st_mode


def test_atomic_dir_failure_keeps_the_old_content_and_leaves_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "old").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "new").write_text("new")
        raise KeyboardInterrupt
    assert [p.name for p in target.iterdir()] == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_file_has_the_permissions_open_would_give(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    write_text_atomic(tmp_path / "atomic", "x")
    assert os.stat(tmp_path / "atomic").st_mode == os.stat(tmp_path / "plain").st_mode


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_every_output_directory_follows_the_umask(tmp_path: Path, umask: int) -> None:
    """A run directory, an activation dump and a plain mkdir get the same mode (dumps
    once came out 0700 from their own copy of this code)."""
    import torch
    from torch import nn

    from convlens.inspect import dump_activations

    old = os.umask(umask)
    try:
        (tmp_path / "plain").mkdir()
        with atomic_dir(tmp_path / "atomic") as tmp:
            (tmp / "f").write_text("x")
        model = nn.Sequential(nn.Conv2d(1, 2, 3))
        dump_activations(model, torch.randn(3, 1, 5, 5), "0", tmp_path / "dump", progress=False)
        write_text_atomic(tmp_path / "file", "x")
        (tmp_path / "plain-file").write_text("x")
    finally:
        os.umask(old)
    want = os.stat(tmp_path / "plain").st_mode
    assert want & 0o777 == 0o777 & ~umask
    assert os.stat(tmp_path / "atomic").st_mode == want
    assert os.stat(tmp_path / "dump").st_mode == want
    assert os.stat(tmp_path / "file").st_mode == os.stat(tmp_path / "plain-file").st_mode


def test_atomic_dir_without_overwrite_keeps_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(FileExistsError, match="already exists"), atomic_dir(target, overwrite=False) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in target.iterdir()] == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_dump_leaves_no_partial_directory(tmp_path: Path) -> None:
    import torch
    from torch import nn

    from convlens.inspect import dump_activations

    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls > 2:
                raise RuntimeError("boom")
            return self.conv(x)

    with pytest.raises(RuntimeError, match="boom"):
        dump_activations(Boom(), torch.randn(6, 1, 5, 5), "conv", tmp_path / "dump", batch_size=2, progress=False)
    assert list(tmp_path.iterdir()) == []
