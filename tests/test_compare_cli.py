"""`convlens compare RUN_A RUN_B`: compare.json holds what the Python API computes, the
figures are written, an earlier output is replaced only with --force, bad input is one line.

Two small runs (the shared trained seed-cnn and an untrained one) on a tiny IDX copy of
the offline MNIST (256 train, 64 test digits), so each command takes a second or two.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from _helpers import cli_call, one_thread, small_run, untrained_run, write_mnist_dir
from convlens.compare import cka, disagreement, linear_probe
from convlens.data import load_dataset
from convlens.models.run import load_run

FIGURES = ("cka", "filters-matched", "accuracy-difference", "disagreements")


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> tuple[Path, Path, Path]:
    """(run A, run B, a tiny MNIST directory)."""
    data = write_mnist_dir(tmp_path_factory.mktemp("tiny-mnist"), n_train=256, n_test=64)
    a = small_run(tmp_path_factory).run.path
    b = untrained_run(tmp_path_factory.mktemp("runs") / "untrained", mnist_dir)
    return Path(a), b, data


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():  # the machine may be shared: torch's thread pool slows down badly under load
        yield


def rgb_run(path: Path) -> Path:
    """An untrained seed-cnn that reads 3-channel 28×28 inputs."""
    import torch

    from convlens.models import get_config
    from convlens.models.builder import build_cnn
    from convlens.models.run import DataSpec, RunConfig, save_run

    cfg = get_config("seed-cnn", in_channels=3)
    torch.manual_seed(0)
    data = DataSpec("mnist", "a test", tuple("0123456789"), (0.1307,), (0.3081,))
    return save_run(path, RunConfig(cfg, data, seed=0, train={}), build_cnn(cfg).state_dict(), {"epochs": []})


def one_error_line(err: str) -> str:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("convlens: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_compare_json_holds_the_api_numbers_and_the_figures_are_written(
        setting: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_a, run_b, data = setting
    out = tmp_path / "cmp"
    code, printed, err = cli_call(capsys, "compare", str(run_a), str(run_b), "--data-dir", str(data), "--out", str(out),
                                  "--probe-epochs", "1", "--gallery", "3", "--batch-size", "32")
    assert code == 0, err
    saved = json.loads((out / "compare.json").read_text())
    a, b = load_run(run_a).model, load_run(run_b).model
    test = load_dataset("mnist", "test", data_dir=data)
    sim = cka(a, b, test, batch_size=32, progress=False)
    assert saved["cka"]["layers_a"] == ["conv1", "conv2"] == list(sim.layers_a)
    assert np.allclose(saved["cka"]["matrix"], sim.matrix, rtol=0, atol=1e-9)
    assert saved["cka"]["settings"]["form"] == sim.settings["form"] and saved["cka"]["estimator"] == "exact"
    dis = disagreement(a, b, test, classes=test.classes, batch_size=32, progress=False)
    saved_dis = saved["disagreement"]
    assert saved_dis["n_inputs"] == dis.n == 64 and saved_dis["mcnemar_p"] == pytest.approx(dis.p_value, rel=1e-12)
    assert saved_dis["disagreement_indices"] == dis.indices.tolist() and saved_dis["agreement"] == dis.agreement.tolist()
    assert (saved_dis["a_only"], saved_dis["b_only"]) == (dis.a_only, dis.b_only)
    assert f"disagree on {len(dis.indices)} of 64 inputs" in printed
    probe = linear_probe(a, b, load_dataset("mnist", "train", data_dir=data), test, ["conv1", "conv2"], classes=10,
                         epochs=1, batch_size=32, progress=False)
    assert saved["probe"]["accuracy"] == probe.to_dict()["accuracy"]
    assert f"{sim.matrix[0, 0]:.3f}" in printed
    drawn = [s for s in FIGURES if s != "disagreements" or len(dis.indices)]
    assert sorted(saved["figures"]) == sorted(drawn)
    for stem in drawn:
        for ext in ("png", "svg", "json"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0
        assert json.loads((out / f"{stem}.json").read_text())["caption"] == saved["figures"][stem]["caption"]


def test_an_earlier_output_is_replaced_only_with_force(setting: tuple[Path, Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run_a, run_b, data = setting
    out = tmp_path / "cmp"
    args = ["compare", str(run_a), str(run_b), "--data-dir", str(data), "--out", str(out), "--no-probe",
            "--gallery", "0", "--layers", "conv2"]
    code, _, err = cli_call(capsys, *args)
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "compare.json" in before and "cka.png" in before
    code, printed, err = cli_call(capsys, *args, "--estimator", "minibatch")
    line = one_error_line(err)
    assert code == 1 and "cka.png" in line and "--force" in line and "CKA" not in printed  # refused before the work
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (out / "cka.png").unlink()  # only compare.json of the set left: still refused, named
    code, _, err = cli_call(capsys, *args, "--estimator", "minibatch")
    assert code == 1 and "already exist" in one_error_line(err)
    code, _, err = cli_call(capsys, *args, "--estimator", "minibatch", "--force")
    assert code == 0, err
    saved = json.loads((out / "compare.json").read_text())
    assert saved["cka"]["estimator"] == "minibatch" and saved["cka"]["layers_a"] == ["conv2"]
    assert (out / "cka.png").exists()


def test_bad_input_is_one_line(setting: tuple[Path, Path, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    run_a, run_b, data = setting
    base = ["compare", str(run_a), str(run_b), "--data-dir", str(data), "--out", str(tmp_path / "x"), "--no-probe"]
    code, _, err = cli_call(capsys, *base, "--layers", "conv1,cnv2")
    line = one_error_line(err)
    assert code == 1 and "'cnv2'" in line and "did you mean 'conv2'" in line
    code, _, err = cli_call(capsys, *base, "--layers", "conv2,fc", "--pool", "mean")
    line = one_error_line(err)
    assert code == 1 and "'fc'" in line and "no spatial output" in line and "pool='flatten'" in line
    code, _, err = cli_call(capsys, "compare", str(run_a), str(rgb_run(tmp_path / "rgb")), "--data-dir", str(data),
                            "--out", str(tmp_path / "y"), "--no-probe")
    line = one_error_line(err)
    assert code == 1 and "(1, 28, 28)" in line and "(3, 28, 28)" in line and "same inputs" in line
    code, _, err = cli_call(capsys, "compare", str(run_a), "--model-b", "zoo:RGBNet", "--data-dir", str(data),
                            "--out", str(tmp_path / "y"), "--no-probe")  # a --model that cannot read the data
    line = one_error_line(err)
    assert code == 1 and "model B cannot run on inputs of shape (1, 28, 28)" in line
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # nothing half-written
