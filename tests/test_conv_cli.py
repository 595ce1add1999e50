"""``convlens conv ...`` through click (the group is attached to the app on import),
with the offline MNIST copy and a freshly initialised seed-cnn run directory. The
numbers printed are checked against torch and the library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result

import convlens.cli.conv  # noqa: F401  (attaches the conv group)
from convlens.cli._app import app
from convlens.conv import receptive_field_stack
from convlens.errors import ConfigError, DataError, LayerError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seed-cnn run with seeded random weights (no training needed to check arithmetic)."""
    from convlens.models import build_cnn, get_config
    from convlens.models.run import DataSpec, RunConfig, save_run

    torch.manual_seed(0)
    cfg = get_config("seed-cnn")
    model = build_cnn(cfg)
    data = DataSpec(name="mnist", source="offline", classes=tuple(str(i) for i in range(10)), mean=(0.1307,), std=(0.3081,))
    path = tmp_path_factory.mktemp("conv-cli") / "run"
    return save_run(path, RunConfig(model=cfg, data=data, seed=0, train={}), model.state_dict(), {"epochs": []})


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(app, ["conv", *[str(a) for a in args]], catch_exceptions=True)


def ok(*args: Any) -> str:
    res = invoke(*args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def test_shape_of_a_stack_prints_the_arithmetic() -> None:
    out = ok("shape", "--input-size", "28", "--layer", "conv:k=5,p=2", "--layer", "maxpool:k=2",
             "--layer", "conv:k=5,p=2,in=16,out=32", "--layer", "maxpool:k=2")
    table = receptive_field_stack(
        [{"kind": "conv", "kernel_size": 5, "padding": 2}, {"kind": "maxpool", "kernel_size": 2, "stride": None},
         {"kind": "conv", "kernel_size": 5, "padding": 2, "in_channels": 16, "out_channels": 32},
         {"kind": "maxpool", "kernel_size": 2, "stride": None}], 28)
    printed = {
        parts[0]: parts for parts in (
            [c.strip() for c in line.strip("│ ").split("│")] for line in out.splitlines() if line.startswith("│")
        )
    }
    for cells in table.cells():
        assert printed[cells[0]] == cells
    assert "32×7×7" in out and "12,832" in out  # conv2: 16·32·25 + 32 parameters


def test_shape_of_a_run(run_dir: Path) -> None:
    out = ok("shape", run_dir)
    row = next(line for line in out.splitlines() if "conv2" in line)
    assert "14" in row and "2,508,800" in row  # rf 14; 32·14·14·16·25 MACs
    assert "28,938 parameters" in out


def test_shape_errors() -> None:
    assert isinstance(invoke("shape", "--input-size", "28").exception, ConfigError)
    res = invoke("shape", "--input-size", "4", "--layer", "conv:k=7")
    assert isinstance(res.exception, ConfigError) and "padded input is only 4×4" in str(res.exception)


def test_explain_a_matrix_with_figure_and_gif(tmp_path: Path) -> None:
    out = ok("explain", "--matrix", "1,2,3;4,5,6;7,8,9", "--kernel", "1,0;0,-1", "--padding", "1", "--at", "2,1",
             "--figure", "--gif", "--out", tmp_path)
    assert "= -4" in out  # 5·1 + 9·(-1) at rows 1..2, cols 0..1: 4 - 8
    stem = "conv-explain-matrix-968682-kernel-1-0-0-1-at2-1"  # the input (a hash of the matrix), kernel, position
    for name in (f"{stem}.png", f"{stem}.svg", f"{stem}.json", f"{stem}-slide.gif", f"{stem}-slide.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    sidecar = json.loads((tmp_path / f"{stem}.json").read_text())
    assert sidecar["caption"] in out


def test_explain_a_learned_filter_matches_the_model(run_dir: Path, mnist_dir: Path) -> None:
    from convlens import views
    from convlens.models.run import load_run

    out = ok("explain", run_dir, "--digit", "3", "--filter", "conv2:5", "--at", "4,6", "--data-dir", mnist_dir)
    run = load_run(run_dir)
    x = views.choose_input(run, digit=3, data_dir=mnist_dir).x
    got: dict[str, torch.Tensor] = {}
    handle = run.model.conv2.register_forward_hook(lambda m, a, o: got.__setitem__("y", o))
    with torch.no_grad():
        run.model(x)
    handle.remove()
    expected = float(got["y"][0, 5, 4, 6])
    assert f"= {expected:.6g}" in out.replace("\n", " ")
    assert "16 input channels" in out


def test_apply_and_panel_write_figures(run_dir: Path, mnist_dir: Path, tmp_path: Path) -> None:
    out = ok("apply", run_dir, "--digit", "7", "--kernel", "sobel_x", "--filter", "conv1:0",
             "--data-dir", mnist_dir, "--out", tmp_path)
    assert (tmp_path / "conv-apply-test-digit7-sobel_x+conv1-0.png").exists() and "sobel_x and conv1:0" in out
    out = ok("panel", "--digit", "7", "--kernel", "gaussian", "--setting", "s=2,p=2", "--setting", "d=2",
             "--data-dir", mnist_dir, "--out", tmp_path)
    assert (tmp_path / "conv-panel-test-digit7-gaussian-s=2-p=2-d=2.png").exists() and "s 2" not in out and "→ 14×14" in out
    assert "sobel_x" in ok("apply", "--list")


def test_user_errors_are_convlens_errors(run_dir: Path, mnist_dir: Path) -> None:
    res = invoke("explain", "--digit", "7", "--kernel", "sobell_x", "--data-dir", mnist_dir)
    assert isinstance(res.exception, ConfigError) and "did you mean 'sobel_x'" in str(res.exception)
    res = invoke("explain", "--digit", "7", "--matrix", "1,2;3,4", "--kernel", "sobel_x")
    assert isinstance(res.exception, ConfigError) and "choose exactly one input" in str(res.exception)
    res = invoke("explain", "--digit", "7", "--filter", "conv1:0", "--data-dir", mnist_dir)
    assert isinstance(res.exception, ConfigError) and "--filter needs a model" in str(res.exception)
    res = invoke("explain", run_dir, "--digit", "7", "--filter", "conv9:0", "--data-dir", mnist_dir)
    assert isinstance(res.exception, LayerError) and "conv1" in str(res.exception)
    res = invoke("apply", run_dir, "--digit", "7", "--filter", "conv2:0", "--data-dir", mnist_dir)
    assert isinstance(res.exception, ConfigError) and "reads 16 channels" in str(res.exception)
    res = invoke("explain", "--matrix", "1,2;3,4", "--kernel", "sobel_x")
    assert isinstance(res.exception, ConfigError) and "kernel spans 3×3" in str(res.exception)
    res = invoke("explain", "--index", "99999", "--kernel", "sobel_x", "--data-dir", mnist_dir)
    assert isinstance(res.exception, DataError) and "examples 0..1499" in str(res.exception)


def test_explain_the_strongest_response_by_default() -> None:
    out = ok("explain", "--matrix", "0,0,0;0,9,0;0,0,0", "--kernel", "laplacian", "--padding", "1")
    assert "out[1, 1]" in out and "= -36" in out  # the centre: -4·9


def test_the_installed_command_reports_errors_in_one_line() -> None:
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "convlens", "conv", "shape", "--input-size", "5", "--layer", "conv:k=7"],
                         capture_output=True, text=True)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        "convlens: error: kernel_size=(7, 7), dilation=(1, 1): the kernel spans 7×7 pixels but the padded "
        "input is only 5×5; use a smaller kernel or dilation, or more padding"
    ]
