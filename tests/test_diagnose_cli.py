"""`convlens diagnose` on a run directory and on --model module:factory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _helpers import cli_call, one_thread, small_run
from convlens import views
from convlens.diagnose import diagnose
from convlens.models.run import load_run

FIGURES = ("confusion", "reliability", "gallery", "cells")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(small_run(tmp_path_factory).run.path)


def _stems(out: Path) -> dict[str, str]:
    found = {}
    for name in FIGURES:
        (png,) = out.glob(f"diagnose-{name}-*.png")
        found[name] = png.stem
    return found


def test_diagnose_writes_figures_and_the_report(run_dir: Path, mnist_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "diag"
    with one_thread():
        code, stdout, err = cli_call(capsys, "diagnose", str(run_dir), "--k", "6", "--neighbours", "2",
                                     "--data-dir", str(mnist_dir), "--out", str(out))
    assert code == 0, err
    stems = _stems(out)
    assert stems["gallery"] == "diagnose-gallery-test-gradcam"
    report = json.loads((out / "diagnosis.json").read_text())
    run = load_run(run_dir)
    ds = views.dataset_for(run, "test", data_dir=mnist_dir)
    d = diagnose(run.model, ds, k=0, progress=False)  # the library, without the gallery
    assert report["confusion"] == d.confusion.tolist()
    assert report["ece"] == pytest.approx(d.ece, abs=1e-6)
    assert report["dataset"] == "mnist" and report["split"] == "test"
    assert [len(report["errors"][k]) for k in ("confident_wrong", "unsure_right", "ambiguous")] == [2, 2, 2]
    assert all(len(item["neighbours"]) == 2 for items in report["errors"].values() for item in items)
    assert f"accuracy {d.accuracy:.2%}" in stdout
    for name, stem in stems.items():
        sidecar = json.loads((out / f"{stem}.json").read_text())
        listed = report["figures"][stem]
        assert listed["figure"] == name and sidecar["alt"] == listed["alt"] and sidecar["caption"] == listed["caption"]
        assert (out / f"{stem}.svg").exists()
    cm = np.asarray(report["confusion"])
    assert f"{int(np.trace(cm))} correct" in report["figures"][stems["confusion"]]["caption"]
    from convlens.views import saved_results  # what the report and the app show of it

    (saved,) = saved_results(out, ["diagnosis.json"])
    assert sorted(f.stem for f in saved.figures) == sorted(stems.values())

    # a second run refuses to overwrite (one line, nothing touched); --force replaces
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, _, err = cli_call(capsys, "diagnose", str(run_dir), "--k", "3", "--neighbours", "0",
                            "--data-dir", str(mnist_dir), "--out", str(out))
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and err.startswith("convlens: error: ") and "--force" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    with one_thread():
        code, _, err = cli_call(capsys, "diagnose", str(run_dir), "--k", "0", "--neighbours", "0",
                                "--data-dir", str(mnist_dir), "--out", str(out), "--force")
    assert code == 0, err
    report = json.loads((out / "diagnosis.json").read_text())
    assert report["errors"]["ambiguous"] == [] and "empty" in report["figures"][stems["gallery"]]["caption"]


def test_diagnose_a_user_model_and_bad_input(mnist_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with one_thread():
        code, _, err = cli_call(capsys, "diagnose", "--model", "zoo:RGBNet", "--input-shape", "3,32,32",
                                "--mean", "0.5", "--std", "0.25", "--k", "3", "--neighbours", "1",
                                "--data-dir", str(mnist_dir), "--out", str(tmp_path / "rgb"))
    assert code == 0, err
    assert "without --weights" in err  # the note about random weights
    report = json.loads((tmp_path / "rgb" / "diagnosis.json").read_text())
    assert report["n"] == 1500 and report["feature_layer"] == "head"
    assert sum(map(sum, report["confusion"])) == 1500
    code, _, err = cli_call(capsys, "diagnose", "--model", "zoo:RGBNet", "--input-shape", "3,32,32",
                            "--method", "gradcan", "--data-dir", str(mnist_dir), "--out", str(tmp_path / "bad"))
    assert code != 0 and len(err.strip().splitlines()) == 1 and "gradcam" in err
    assert not (tmp_path / "bad").exists()
