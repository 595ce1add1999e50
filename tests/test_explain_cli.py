"""`convlens cam` and `convlens faithfulness` on a run directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _helpers import cli_call as _cli
from _helpers import untrained_run
from convlens.data import load_dataset
from convlens.explain import cam, faithfulness
from convlens.models.run import load_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    return untrained_run(tmp_path_factory.mktemp("runs") / "run", mnist_dir)


def test_cam_on_a_digit(run_dir: Path, mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "cam", str(run_dir), "--digit", "7", "--layer", "conv2", "--target", "3",
                          "--data-dir", str(mnist_dir), "--out", str(tmp_path))
    assert code == 0, err
    for ext in ("png", "svg", "json"):
        assert (tmp_path / f"cam-gradcam-conv2-class3-test-digit7.{ext}").exists()
    ds = load_dataset("mnist", "test", data_dir=mnist_dir)
    x, _ = ds.item(ds.index_of(7))
    p = float(cam(load_run(run_dir).model, x, layer="conv2", target=3).probabilities[0, 3])
    assert f"Grad-CAM for class 3 (p = {p:.2f}) at conv2" in out
    sidecar = json.loads((tmp_path / "cam-gradcam-conv2-class3-test-digit7.json").read_text())
    assert sidecar["caption"] in out


def test_cam_compares_methods_and_classes(run_dir: Path, mnist_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "cam", str(run_dir), "--index", "0", "--methods", "gradcam,scorecam,saliency",
                          "--batch-size", "8", "--data-dir", str(mnist_dir), "--out", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "cam-compare-gradcam+scorecam+saliency-pred-test-index0.png").exists()
    assert "3 heatmaps for class" in out and "The model predicts" in out
    code, out, err = _cli(capsys, "cam", str(run_dir), "--index", "0", "--target", "top2", "--method", "layercam",
                          "--data-dir", str(mnist_dir), "--out", str(tmp_path), "--palette", "gray")
    assert code == 0, err
    assert "2 heatmaps for the top 2 classes (LayerCAM)" in out


def test_cam_on_an_image_file(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    pixels = np.zeros((40, 40), dtype=np.uint8)
    pixels[5:35, 18:22] = 255  # a "1", larger than the model's input: fitted to 28×28
    Image.fromarray(pixels).save(tmp_path / "one.png")
    code, out, err = _cli(capsys, "cam", str(run_dir), "--image", str(tmp_path / "one.png"), "--method", "saliency",
                          "--out", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "cam-saliency-pred-image-one.png").exists() and "Saliency for class" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--digit", "7", "--method", "gradcamm"], "unknown explanation method 'gradcamm': did you mean 'gradcam'"),
        (["--digit", "7", "--layer", "conv9"], "unknown layer 'conv9'"),
        (["--digit", "7", "--method", "saliency", "--layer", "conv1"], "reads no layer"),
        (["--digit", "7", "--target", "11"], "out of range"),
        (["--digit", "7", "--index", "3"], "choose exactly one input"),
    ],
)
def test_cam_user_errors_are_one_line(run_dir: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str],
                                      args: list[str], message: str) -> None:
    code, _, err = _cli(capsys, "cam", str(run_dir), *args, "--data-dir", str(mnist_dir))
    assert code == 1
    assert err.startswith("convlens: error: ") and message in err and err.count("\n") == 1


def test_faithfulness_table_curves_and_scores(run_dir: Path, mnist_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "faithfulness", str(run_dir), "--methods", "gradcam,saliency", "--n", "6",
                          "--steps", "4", "--sanity-images", "2", "--data-dir", str(mnist_dir), "--out", str(tmp_path))
    assert code == 0, err
    assert "Faithfulness on 6 test images of mnist" in out and "Grad-CAM" in out and "Saliency" in out
    assert (tmp_path / "faithfulness-gradcam+saliency-pred-test-n6.png").exists()
    scores = json.loads((tmp_path / "faithfulness-gradcam+saliency-pred-test-n6-scores.json").read_text())
    assert [m["key"] for m in scores["methods"]] == ["gradcam", "saliency"]
    ds = load_dataset("mnist", "test", data_dir=mnist_dir)
    expected = faithfulness(load_run(run_dir).model, ds, ["gradcam", "saliency"], n=6, steps=4, sanity_images=2)
    for got, row in zip(scores["methods"], expected.rows(), strict=True):
        assert got["deletion_auc"] == pytest.approx(row["deletion_auc"], abs=1e-6)
        assert got["average_drop"] == pytest.approx(row["average_drop"], abs=1e-4)
        assert got["randomisation_correlation"] == pytest.approx(row["randomisation_correlation"], abs=1e-6)
    assert f"{expected.rows()[0]['deletion_auc']:.3f}" in out


def test_faithfulness_user_error(run_dir: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "faithfulness", str(run_dir), "--target", "top2", "--n", "2",
                        "--data-dir", str(mnist_dir))
    assert code == 1 and "one class per image" in err


def test_cam_help_and_choices_come_from_the_registry(run_dir: Path, mnist_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from convlens.explain import METHODS, registry

    class TestCAM(METHODS["gradcam"]):  # type: ignore[misc,valid-type]  # a registry entry made at run time
        name = "test-cam"
        title = "Test-CAM"

    monkeypatch.setitem(registry._REGISTRY, "test-cam", TestCAM)  # registered for this test only
    code, out, _ = _cli(capsys, "cam", "--help")
    assert code == 0
    rows: dict[str, str] = {}
    for line in out.split("Methods (for --method and --methods):")[1].splitlines():
        if line[2:3].strip():  # a new row: "  name   Title: needs"
            name, words = line.split(None, 1)
            rows[name] = words
        elif line.strip():  # click wrapped the row
            rows[name] += " " + line.strip()
    assert list(rows) == list(METHODS)  # every registered method, the new one last
    assert rows["test-cam"] == "Test-CAM: a layer, gradients"
    assert rows["scorecam"] == "Score-CAM: a layer, no gradients, perturbed inputs"
    code, out, err = _cli(capsys, "cam", str(run_dir), "--digit", "7", "--method", "test-cam",
                          "--data-dir", str(mnist_dir), "--out", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "cam-test-cam-pred-test-digit7.png").exists() and "Test-CAM for class" in out
