"""Known problems end in one line that names them and the fix, never "unexpected error"
(issue #11, finding 8): a binary config.json, an image too large to read, a size that is
not a number, an --out that is a file.

The commands run in-process through ``convlens.cli.main`` (the console script's entry
point), so these tests take no interpreter start-up each.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convlens.cli import main
from convlens.models import build_model, get_config
from convlens.models.run import DataSpec, RunConfig, library_versions, save_run


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``convlens ARGS``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


def error_line(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    """The command failed with one line ``convlens: error: ...`` and no traceback; that line."""
    code, out, err = run_cli(capsys, *args)
    lines = err.strip("\n").splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("convlens: error: "), lines[0]
    assert "Traceback" not in out + err
    return lines[0]


def untrained_run(path: Path) -> Path:
    """A complete run directory of an untrained seed-cnn (no training needed)."""
    data = DataSpec("mnist", "a test", tuple("0123456789"), (0.1307,), (0.3081,))
    config = RunConfig(get_config("seed-cnn"), data, seed=0, train={}, versions=library_versions())
    torch.manual_seed(0)
    return save_run(path, config, build_model("seed-cnn").state_dict(), {"epochs": []})


def test_binary_config_json_is_named_with_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = untrained_run(tmp_path / "run")
    (run / "config.json").write_bytes(bytes(range(200, 256)) * 4)
    line = error_line(capsys, "layers", run)
    assert str(run / "config.json") in line and "not a text file" in line
    assert "convlens train" in line


def test_config_asking_for_a_huge_model_allocates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the weights are compared with the config's shapes before a model is built
    run = untrained_run(tmp_path / "run")
    text = (run / "config.json").read_text().replace('"out_channels": 32', '"out_channels": 200000', 1)
    (run / "config.json").write_text(text)
    line = error_line(capsys, "layers", run)
    assert "does not match" in line and "conv2.weight" in line


def test_image_beyond_the_pixel_limit_is_refused_by_convlens(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from convlens.data.images import MAX_IMAGE_PIXELS

    run = untrained_run(tmp_path / "run")
    for side in (20000, 9500):  # Pillow's own guard fires at open / convlens's limit, just above it
        Image.new("L", (side, side)).save(tmp_path / f"big{side}.png")
        line = error_line(capsys, "cam", run, "--image", tmp_path / f"big{side}.png")
        assert f"{tmp_path / f'big{side}.png'}" in line and f"{MAX_IMAGE_PIXELS:,}" in line
        assert "scale it down" in line and "decompression" not in line.lower()


@pytest.mark.parametrize("size", ["abc", "28,", "0", "-3", "1,2,3", "28x"])
def test_conv_shape_input_size_that_is_not_a_size(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = error_line(capsys, "conv", "shape", "--input-size", size, "--layer", "conv:k=3")
    assert f"--input-size {size!r} is not a size" in line and "e.g. 28 or 28,32" in line


def test_conv_shape_input_size_forms(capsys: pytest.CaptureFixture[str]) -> None:
    for size, title in (("28", "input 28×28"), ("28,32", "input 28×32"), ("28x32", "input 28×32")):
        code, out, _ = run_cli(capsys, "conv", "shape", "--input-size", size, "--layer", "conv:k=3")
        assert code == 0 and title in out


def test_cam_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = untrained_run(tmp_path / "run")
    (tmp_path / "file").write_text("mine")
    from PIL import Image

    image = tmp_path / "seven.png"
    Image.new("L", (28, 28)).save(image)
    line = error_line(capsys, "cam", run, "--image", image, "--out", tmp_path / "file")
    assert str(tmp_path / "file") in line and "--out" in line
    assert (tmp_path / "file").read_text() == "mine"  # (the check is the output policy's, in _atomic)
