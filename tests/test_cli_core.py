"""The core commands as a user runs them (``python -m convlens ...`` in a subprocess, the
offline MNIST copy given through CONVLENS_DATA_DIR or --data-dir): every user error is
one line on stderr starting with "convlens: error:", a non-zero exit and no traceback
unless CONVLENS_DEBUG=1; the happy paths write their figures."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from _helpers import Recording, mnist_path, small_run, write_mnist_dir


def convlens(*args: str | Path, env: dict[str, str] | None = None, debug: bool = False,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "CONVLENS_DATA_DIR": str(mnist_path()), "COLUMNS": "200"}
    full.pop("CONVLENS_DEBUG", None)
    if debug:
        full["CONVLENS_DEBUG"] = "1"
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "convlens", *map(str, args)], capture_output=True,
                          text=True, env=full, timeout=timeout)


def one_error_line(res: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The command failed with exactly one line on stderr, no traceback; returns that line."""
    assert res.returncode != 0, res
    lines = res.stderr.strip("\n").splitlines()
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert line.startswith("convlens: error: "), line
    assert "Traceback" not in res.stderr + res.stdout
    for f in fragments:
        assert f in line, line
    return line


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    return small_run(tmp_path_factory)


@pytest.fixture(scope="module")
def run_dir(shared: Recording, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the shared run (commands may write figures into it)."""
    dest = tmp_path_factory.mktemp("cli") / "run"
    shutil.copytree(shared.run.path, dest)
    return dest


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist_dir(tmp_path_factory.mktemp("tiny"))


# --- errors --------------------------------------------------------------------------------------


def test_missing_data_says_how_to_fix(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    line = one_error_line(convlens("maps", run_dir, "--digit", "7", "--data-dir", tmp_path / "empty"),
                          str(tmp_path / "empty"), "train-images-idx3-ubyte", "--data-dir", "download")
    assert "missing" in line
    # the same through the environment variable, for training
    line = one_error_line(convlens("train", "--steps", "1", "--out", tmp_path / "r",
                                   env={"CONVLENS_DATA_DIR": str(tmp_path / "empty")}),
                          "CONVLENS_DATA_DIR", "download")
    one_error_line(convlens("train", "--steps", "1", "--out", tmp_path / "r", "--data-dir", tmp_path / "absent"),
                   str(tmp_path / "absent"), "does not exist")
    one_error_line(convlens("demo", "--out", tmp_path / "demo", "--data-dir", tmp_path / "empty"),
                   str(tmp_path / "empty"), "download")
    assert not (tmp_path / "demo").exists()
    assert not (tmp_path / "r").exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("cmd", [("download",), ("download", "mnist"), ("maps", "RUN", "--digit", "7")])
def test_no_data_and_no_network_says_how_to_fix(run_dir: Path, tmp_path: Path, cmd: tuple[str, ...]) -> None:
    # a new user offline: no --data-dir, no CONVLENS_DATA_DIR, the download fails
    env = {"CONVLENS_DATA_DIR": "", "CONVLENS_CACHE_DIR": str(tmp_path / "cache"),
           "CONVLENS_MIRROR": f"http://127.0.0.1:{_closed_port()}/"}
    line = one_error_line(convlens(*[str(run_dir) if a == "RUN" else a for a in cmd], env=env),
                          "could not download", "127.0.0.1", "--data-dir", "CONVLENS_DATA_DIR")
    assert "connection" in line.lower() or "refused" in line.lower()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # nothing half-written


def test_download_with_a_checksum_mismatch_keeps_nothing(tmp_path: Path) -> None:
    # a mirror that serves the offline copy: not the official files, so checksums differ
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(mnist_path()))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {"CONVLENS_DATA_DIR": "", "CONVLENS_CACHE_DIR": str(tmp_path / "cache"),
               "CONVLENS_MIRROR": f"http://127.0.0.1:{server.server_address[1]}/"}
        one_error_line(convlens("download", env=env), "checksum mismatch", "train-images-idx3-ubyte.gz",
                       "--data-dir")
    finally:
        server.shutdown()
        server.server_close()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_unknown_dataset(tmp_path: Path) -> None:
    one_error_line(convlens("download", "mnits", env={"CONVLENS_CACHE_DIR": str(tmp_path)}),
                   "unknown dataset 'mnits'", "did you mean 'mnist'")
    one_error_line(convlens("train", "--dataset", "fashion", "--out", tmp_path / "r"), "unknown dataset 'fashion'")


@pytest.mark.parametrize("which", ["t10k-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"])
def test_truncated_idx_names_the_file(tiny_dir: Path, tmp_path: Path, which: str) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    data = (bad / which).read_bytes()
    (bad / which).write_bytes(data[: len(data) // 2])
    one_error_line(convlens("train", "--steps", "1", "--out", tmp_path / "r", "--data-dir", bad), str(bad / which))
    assert not (tmp_path / "r").exists()


def test_corrupt_idx_names_the_file(run_dir: Path, tiny_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(b"this is not an IDX file at all" * 4)
    one_error_line(convlens("maps", run_dir, "--digit", "7", "--data-dir", bad),
                   str(bad / "t10k-images-idx3-ubyte.gz"))


def test_unknown_layer_lists_the_valid_names(run_dir: Path) -> None:
    line = one_error_line(convlens("filters", run_dir, "--layer", "conv9"), "unknown layer 'conv9'")
    assert "conv1" in line and "conv2" in line
    line = one_error_line(convlens("maps", run_dir, "--index", "0", "--layer", "pool9"), "unknown layer 'pool9'")
    for name in ("conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "fc"):
        assert name in line


def test_a_layer_that_is_not_a_conv(run_dir: Path) -> None:
    one_error_line(convlens("filters", run_dir, "--layer", "fc"), "'fc' is a Linear", "conv1 and conv2")


def test_a_digit_that_is_not_in_the_data(run_dir: Path, tmp_path: Path) -> None:
    no7 = write_mnist_dir(tmp_path / "no7", drop_digits=(7,))
    one_error_line(convlens("maps", run_dir, "--digit", "7", "--data-dir", no7), "no digit 7", "mnist test")
    one_error_line(convlens("maps", run_dir, "--digit", "12"), "digit 12 does not exist", "0..9")
    one_error_line(convlens("maps", run_dir, "--digit", "7", "--nth", "5000"), "nth=5000")


def test_an_index_out_of_range(run_dir: Path) -> None:
    one_error_line(convlens("maps", run_dir, "--index", "1500"), "index 1500 is out of range", "0..1499")
    one_error_line(convlens("maps", run_dir, "--index", "-1"), "index -1 is out of range")


def test_unreadable_image(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    one_error_line(convlens("maps", run_dir, "--image", tmp_path / "broken.png"), "broken.png")
    one_error_line(convlens("maps", run_dir, "--image", tmp_path / "absent.png"), "absent.png")


def test_a_run_that_does_not_exist(tmp_path: Path) -> None:
    for cmd in ("filters", "maps"):
        one_error_line(convlens(cmd, tmp_path / "nope", "--index", "0") if cmd == "maps"
                       else convlens(cmd, tmp_path / "nope"),
                       str(tmp_path / "nope"), "does not exist")


def test_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    one_error_line(convlens("filters", tmp_path), str(tmp_path), "config.json is missing")


def test_corrupt_snapshots_in_a_run(run_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    (broken / "snapshots" / "filters.safetensors").write_bytes(b"garbage\n")
    one_error_line(convlens("filters", broken, "--evolution", "--out", tmp_path / "figs"),
                   str(broken / "snapshots" / "filters.safetensors"))


def test_other_user_errors(run_dir: Path, tmp_path: Path) -> None:
    one_error_line(convlens("maps", run_dir), "exactly one input")
    one_error_line(convlens("train", "--arch", "seed_cnn", "--out", tmp_path / "r"),
                   "unknown architecture 'seed_cnn'", "seed-cnn")
    one_error_line(convlens("train", "--steps", "1", "--device", "cuda", "--out", tmp_path / "r"), "CUDA")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    one_error_line(convlens("demo", "--out", tmp_path / "mine"), str(tmp_path / "mine"), "convlens did not write (notes.txt)")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "r").exists()


def test_train_does_not_replace_a_directory_that_is_not_a_run(tiny_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    res = convlens("train", "--steps", "1", "--data-dir", tiny_dir, "--out", tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    one_error_line(res, str(tmp_path / "mine"))


@pytest.mark.parametrize("args", [("filters", "NOPE"), ("filters", "RUN", "--layer", "conv9")])
def test_debug_shows_the_traceback(run_dir: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    argv = [str(tmp_path / "nope") if a == "NOPE" else str(run_dir) if a == "RUN" else a for a in args]
    res = convlens(*argv, debug=True)
    assert res.returncode != 0
    assert "Traceback (most recent call last)" in res.stderr
    assert ("RunError" if "NOPE" in args else "LayerError") in res.stderr


def test_debug_in_process_reraises_the_error(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from convlens.cli import main
    from convlens.errors import LayerError

    runner = CliRunner()
    with runner.isolation() as (_out, err, *_):
        with pytest.raises(SystemExit) as info:
            main(["filters", str(run_dir), "--layer", "conv9"])
        assert info.value.code == 1
        assert err.getvalue().decode().startswith("convlens: error: unknown layer 'conv9'")
    monkeypatch.setenv("CONVLENS_DEBUG", "1")
    with runner.isolation(), pytest.raises(LayerError):
        main(["filters", str(run_dir), "--layer", "conv9"])


# --- happy paths ---------------------------------------------------------------------------------


def check_written(folder: Path, stem: str) -> dict[str, str]:
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(stem + ".")) == [
        f"{stem}.json", f"{stem}.png", f"{stem}.svg"]
    sidecar = json.loads((folder / f"{stem}.json").read_text())
    with Image.open(folder / f"{stem}.png") as im:
        assert im.text["Alt"] == sidecar["alt"] and im.text["Description"] == sidecar["caption"]
    assert (folder / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    return sidecar


def test_filters_conv2(run_dir: Path, tmp_path: Path) -> None:
    res = convlens("filters", run_dir, "--layer", "conv2", "--out", tmp_path / "figs")
    assert res.returncode == 0, res.stderr
    sidecar = check_written(tmp_path / "figs", "filters-conv2")
    assert "32 filters of layer conv2" in sidecar["alt"] and "16 input channels" in sidecar["alt"]
    assert sidecar["caption"] in res.stdout.replace("\n", " ") or sidecar["caption"][:60] in res.stdout
    assert res.stderr == ""


def test_maps_of_a_seven_after_relu(run_dir: Path) -> None:
    res = convlens("maps", run_dir, "--digit", "7", "--stage", "relu")
    assert res.returncode == 0, res.stderr
    sidecar = check_written(run_dir / "figures", "maps-conv1-relu-test-digit7")  # default: the run's figures/
    assert "16 feature maps of layer conv1 (relu)" in sidecar["alt"]
    assert "digit 7" in sidecar["caption"]


def test_filters_per_filter_gray_and_evolution(run_dir: Path, tmp_path: Path) -> None:
    res = convlens("filters", run_dir, "--scale", "per-filter", "--palette", "gray", "--evolution",
                   "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "per-filter" in check_written(tmp_path, "filters-conv1-per-filter-gray")["caption"]
    check_written(tmp_path, "filters-evolution-gray")


def test_models_lists_the_registry() -> None:
    from convlens.models import list_models

    res = convlens("models")
    assert res.returncode == 0
    names = [line.split()[0] for line in res.stdout.splitlines() if line.strip()]
    assert names == list(list_models())


def test_train_writes_a_run(tiny_dir: Path, tmp_path: Path) -> None:
    res = convlens("train", "--steps", "3", "--snapshot-every", "1", "--data-dir", tiny_dir, "--out", tmp_path / "r",
                   "--seed", "5", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    from convlens.models.run import load_run

    run = load_run(tmp_path / "r")
    assert run.config.seed == 5 and run.config.train["steps"] == 3 and run.metrics["completed_steps"] == 3
    assert sorted(run.snapshots()) == [0, 1, 2, 3]
    assert f"{run.test_accuracy:.2%}" in res.stdout


def test_ctrl_c_during_training_keeps_the_last_epoch(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    env = {**os.environ, "CONVLENS_DATA_DIR": str(tiny_dir)}
    env.pop("CONVLENS_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "convlens", "train", "--epochs", "400", "--out", str(out),
                             "--snapshot-every", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.json").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no epoch completed in time"
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "convlens: interrupted"
    assert "Traceback" not in stderr
    assert "holds the last completed epoch" in stdout
    from convlens.models.run import load_run

    run = load_run(out)
    done = run.metrics["epochs"]
    assert done and run.metrics["complete"] is False
    assert [e["epoch"] for e in done] == list(range(1, len(done) + 1))
    assert run.metrics["completed_steps"] == done[-1]["step"] == len(done) * 4  # 256 images, batch 64
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
