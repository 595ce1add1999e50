"""The one output policy (issue #11, findings 1, 2, 3, 7 and the permissions of 10),
through the real command line in a subprocess wherever a user's work could be lost:

* an existing run, demo output, dump or figure is replaced only with ``--force``, and
  never while it holds files convlens did not write;
* a second process writing the same run fails at once with one line;
* figures are named by what distinguishes them, and a figure's PNG, SVG and JSON are
  written completely or not at all;
* an unwritable place is reported in one line before the work starts;
* everything convlens writes follows the umask.

The unwritable-directory tests need permissions to be enforced: run as root, the
subprocess drops CAP_DAC_OVERRIDE with ``setpriv`` (or the tests are skipped).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from _helpers import mnist_path, untrained_run, write_mnist_dir

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str | Path, prefix: Sequence[str] = (), env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "CONVLENS_DATA_DIR": str(mnist_path()), "COLUMNS": "200",
            "PYTHONPATH": str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    full.pop("CONVLENS_DEBUG", None)
    full.update(env or {})
    return subprocess.run([*prefix, sys.executable, "-m", "convlens", *map(str, args)], capture_output=True,
                          text=True, env=full, timeout=timeout)


def one_error_line(res: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert res.returncode == 1, res
    lines = res.stderr.strip("\n").splitlines()
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert line.startswith("convlens: error: "), line
    assert "Traceback" not in res.stderr + res.stdout and "unexpected error" not in line
    for f in fragments:
        assert f in line, line
    return line


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its bytes (what "left intact" means)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist_dir(tmp_path_factory.mktemp("tiny"), n_train=128, n_test=32)


@pytest.fixture(scope="module")
def trained(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run written by `convlens train` (two steps, filter snapshots) with one figure."""
    run = tmp_path_factory.mktemp("trained") / "run"
    res = cli("train", "--steps", "2", "--batch-size", "32", "--snapshot-every", "1", "--data-dir", tiny,
              "--device", "cpu", "--out", run)
    assert res.returncode == 0, res.stderr
    assert cli("filters", run).returncode == 0
    return run


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(trained, dest)
    return dest


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_run(tmp_path_factory.mktemp("plain") / "run", mnist_path())


# --- finding 1: an existing run is never replaced silently --------------------------------------


def test_train_refuses_to_replace_a_run_unless_forced(run_copy: Path, tiny: Path) -> None:
    before = snapshot(run_copy)
    assert "figures/filters-conv1.png" in before and "snapshots/filters.safetensors" in before
    one_error_line(cli("train", "--steps", "1", "--data-dir", tiny, "--out", run_copy, "--seed", "5"),
                   str(run_copy), "already holds a convlens run", "--force")
    assert snapshot(run_copy) == before

    res = cli("train", "--steps", "1", "--data-dir", tiny, "--out", run_copy, "--seed", "5", "--force")
    assert res.returncode == 0, res.stderr
    assert json.loads((run_copy / "config.json").read_text())["seed"] == 5
    # the figures drawn from the replaced weights went with them; no partial or lock file is left
    assert not (run_copy / "figures").exists()
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"]


@pytest.mark.parametrize("where", ["figures/notes.txt", "notes.txt"])
def test_force_never_deletes_a_file_convlens_did_not_write(run_copy: Path, tiny: Path, where: str) -> None:
    (run_copy / where).write_text("my notes")
    before = snapshot(run_copy)
    one_error_line(cli("train", "--steps", "1", "--data-dir", tiny, "--out", run_copy, "--force"),
                   str(run_copy), "did not write", where)
    assert snapshot(run_copy) == before


def test_import_weights_refuses_to_replace_a_run_unless_forced(run_copy: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    weights = tmp_path / "w.safetensors"
    shutil.copy(run_copy / "model.safetensors", weights)
    before = snapshot(run_copy)
    one_error_line(cli("import-weights", weights, "--out", run_copy), "already holds a convlens run", "--force")
    assert snapshot(run_copy) == before  # snapshots/ and the training history are still there

    (run_copy / "figures" / "mine.txt").write_text("x")
    one_error_line(cli("import-weights", weights, "--out", run_copy, "--force"), "figures/mine.txt")
    (run_copy / "figures" / "mine.txt").unlink()
    res = cli("import-weights", weights, "--out", run_copy, "--force")
    assert res.returncode == 0, res.stderr
    assert json.loads((run_copy / "metrics.json").read_text())["epochs"] == []
    assert set(load_file(str(run_copy / "model.safetensors"))) == set(load_file(str(weights)))


def test_a_second_demo_needs_force_and_keeps_the_users_files(tmp_path: Path, tiny: Path) -> None:
    from convlens.demo import run_demo
    from convlens.errors import OutputError
    from convlens.train import TrainConfig

    def demo(**kw: bool) -> None:
        run_demo(tmp_path / "out", data_dir=tiny, device="cpu", config=TrainConfig(steps=1, snapshot_every=1),
                 layers=("conv1",), **kw)

    demo()
    before = snapshot(tmp_path / "out")
    with pytest.raises(OutputError, match="already holds a convlens demo output; add --force"):
        demo()
    assert snapshot(tmp_path / "out") == before
    demo(overwrite=True)  # everything there is the demo's own: replaced
    (tmp_path / "out" / "figures" / "stale.png").write_bytes(b"mine")
    with pytest.raises(OutputError, match=r"figures/stale\.png"):
        demo(overwrite=True)
    assert (tmp_path / "out" / "figures" / "stale.png").read_bytes() == b"mine"


def test_a_dump_is_replaced_only_when_asked(tmp_path: Path) -> None:
    from torch import nn

    from convlens.errors import OutputError
    from convlens.inspect import dump_activations

    model, x = nn.Sequential(nn.Conv2d(1, 2, 3)), torch.randn(3, 1, 5, 5)
    dump_activations(model, x, "0", tmp_path / "d", progress=False)
    with pytest.raises(OutputError, match="already holds a convlens activation dump"):
        dump_activations(model, x, "0", tmp_path / "d", progress=False)
    dump_activations(model, x, "0", tmp_path / "d", progress=False, overwrite=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(OutputError, match="did not write"):
        dump_activations(model, x, "0", tmp_path / "mine", progress=False, overwrite=True)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["thesis.tex"]


# --- finding 2: two writers, one result ---------------------------------------------------------


def test_a_second_writer_fails_while_the_run_is_claimed(tmp_path: Path, tiny: Path) -> None:
    """The test process holds the claim, exactly as a running `convlens train` does."""
    from convlens._atomic import claim

    out = tmp_path / "run"
    with claim(out):
        one_error_line(cli("train", "--steps", "1", "--data-dir", tiny, "--out", out),
                       str(out), "being written by another convlens process", f"pid {os.getpid()}")
        one_error_line(cli("import-weights", tmp_path / "w.pt", "--out", out), "another convlens process")
    assert not out.exists()
    assert cli("train", "--steps", "1", "--data-dir", tiny, "--out", out).returncode == 0  # released


def test_two_trains_at_once_the_second_fails_and_the_first_is_kept(tmp_path: Path, tiny: Path) -> None:
    """Two real `convlens train --out same`: the second is started only once the first
    provably holds the run (its pid is in the lock file), so the outcome never depends on timing."""
    out = tmp_path / "run"
    env = {**os.environ, "CONVLENS_DATA_DIR": str(tiny)}
    first = subprocess.Popen([sys.executable, "-m", "convlens", "train", "--steps", "100000", "--batch-size", "32",
                              "--snapshot-every", "0", "--device", "cpu", "--seed", "1", "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             # Ctrl-C must reach it even when the tests run in a background job (SIGINT ignored)
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lock = tmp_path / ".run.lock"
    try:
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first train never claimed its run"
            time.sleep(0.05)
        second = cli("train", "--steps", "1", "--data-dir", tiny, "--seed", "2", "--out", out)
        one_error_line(second, str(out), "being written by another convlens process", f"pid {first.pid}")
    finally:
        first.send_signal(signal.SIGINT)
        try:
            _, err = first.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            first.kill()
            _, err = first.communicate()
    assert first.returncode == 130, err
    if out.exists():  # the first one's epochs, never the second's
        assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert not lock.exists()


# --- finding 3: figures that do not overwrite each other, written whole -------------------------


def test_cam_figures_are_named_by_method_target_and_input(plain_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "figs"
    for args in (("--digit", "7"), ("--digit", "3", "--target", "1"), ("--index", "5", "--method", "saliency")):
        res = cli("cam", plain_run, *args, "--out", out)
        assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.glob("*.png")) == [
        "cam-gradcam-class1-test-digit3.png", "cam-gradcam-pred-test-digit7.png",
        "cam-saliency-pred-test-index5.png"]
    before = snapshot(out)
    one_error_line(cli("cam", plain_run, "--digit", "7", "--out", out),
                   "figure", "cam-gradcam-pred-test-digit7.png already exists", "--force")
    assert snapshot(out) == before
    res = cli("cam", plain_run, "--digit", "7", "--out", out, "--overwrite")  # the alias of --force
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def test_figure_names_spell_layers_alike_across_commands(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("L", (8, 8), 255).save(tmp_path / "square.png")
    model = ("--model", "zoo:nested_sequential", "--input-shape", "1,8,8")
    out = tmp_path / "figs"
    assert cli("filters", *model, "--layer", "0.2.0.conv", "--out", out).returncode == 0
    res = cli("maps", *model, "--layer", "0.2.0.conv", "--stage", "relu", "--image", tmp_path / "square.png",
              "--out", out)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.glob("*.png")) == [
        "filters-0.2.0.conv.png", "maps-0.2.0.conv-relu-image-square.png"]


def test_an_interrupted_figure_leaves_none_of_its_files(plain_run: Path, tmp_path: Path) -> None:
    """Ctrl-C while the SVG is drawn (after the PNG, as in the interrupted topk of the
    issue), through the real command line: no PNG, SVG or JSON of it is left."""
    out = tmp_path / "figs"
    script = (
        "import sys\n"
        "import convlens.viz.figure as f\n"
        "def interrupted(self):\n"
        "    raise KeyboardInterrupt\n"
        "f.Explained.svg_bytes = interrupted\n"
        "from convlens.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    env = {**os.environ, "CONVLENS_DATA_DIR": str(mnist_path())}
    res = subprocess.run([sys.executable, "-c", script, "topk", str(plain_run), "--layer", "conv1", "--k", "2",
                          "--channels", "0-1", "--out", str(out)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 130 and "convlens: interrupted" in res.stderr, res.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_a_set_of_files_is_written_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convlens._atomic import write_files

    write_files(tmp_path, {"a.png": b"old a", "a.json": b"old json"})
    real = os.replace
    calls = []

    def fail_on_the_second(src: str | Path, dst: str | Path) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        write_files(tmp_path, {"a.png": b"new a", "a.svg": b"new svg", "a.json": b"new json"}, overwrite=True)
    monkeypatch.setattr(os, "replace", real)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"a.png": b"old a", "a.json": b"old json"}


def test_a_figure_that_appeared_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    """A concurrent writer of the same figure: the check before the work passed, the
    other writer got there first; the later one refuses at commit time."""
    from convlens.errors import OutputError
    from convlens.viz.figure import Explained, check_figures, new_figure, save

    fig = Explained(new_figure(1, 1), "A caption.", "An alt text.")
    check_figures(tmp_path, ["f"])
    save(fig, tmp_path, "f")  # the other writer
    first = snapshot(tmp_path)
    with pytest.raises(OutputError, match=r"f\.png.*already exist.*--force"):
        save(fig, tmp_path, "f")
    assert snapshot(tmp_path) == first
    assert sorted(json.loads((tmp_path / "f.json").read_text())["files"]) == ["f.png", "f.svg"]


# --- finding 7: an unwritable place is one line, before the work --------------------------------


@pytest.fixture
def unprivileged(tmp_path: Path) -> list[str]:
    """A command prefix under which permissions are enforced (root drops CAP_DAC_OVERRIDE)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: directory permissions are not enforced")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    blocked = subprocess.run([*prefix, sys.executable, "-c", f"open({str(probe / 'x')!r}, 'w')"],
                             capture_output=True).returncode != 0
    probe.rmdir()
    if not blocked:
        pytest.skip("permissions are not enforced here")
    return prefix


def test_an_unwritable_out_fails_before_any_work(unprivileged: list[str], plain_run: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    (tmp_path / "empty").mkdir()
    try:
        # the data directory is empty: an error about the output proves nothing was read first
        line = one_error_line(cli("train", "--steps", "1", "--out", ro / "run", "--data-dir", tmp_path / "empty",
                                  prefix=unprivileged), str(ro), "permission denied", "choose another --out")
        assert "tmp" not in line.replace(str(tmp_path), "")
        started = time.monotonic()
        one_error_line(cli("faithfulness", plain_run, "--n", "400", "--methods", "all", "--out", ro / "figs",
                           prefix=unprivileged), str(ro), "choose another --out")
        assert time.monotonic() - started < 60
        line = one_error_line(cli("filters", plain_run, "--out", ro, prefix=unprivileged), str(ro), "--out")
        assert ".tmp" not in line
    finally:
        ro.chmod(0o755)
    assert list(ro.iterdir()) == []


def test_a_read_only_run_says_to_give_out(unprivileged: list[str], plain_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(plain_run, run)
    run.chmod(0o555)
    try:
        one_error_line(cli("maps", run, "--digit", "7", prefix=unprivileged),
                       str(run / "figures"), "give --out DIR")
        res = cli("maps", run, "--digit", "7", "--out", tmp_path / "elsewhere", prefix=unprivileged)
        assert res.returncode == 0, res.stderr
    finally:
        run.chmod(0o755)
    assert (tmp_path / "elsewhere" / "maps-conv1-conv-test-digit7.png").is_file()


def test_out_that_is_a_file_is_one_line(plain_run: Path, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("mine")
    one_error_line(cli("cam", plain_run, "--digit", "7", "--out", tmp_path / "f.txt"),
                   str(tmp_path / "f.txt"), "is a file, not a directory", "choose another --out")
    assert (tmp_path / "f.txt").read_text() == "mine"


# --- finding 10, permissions: one mode across a run directory -----------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_everything_in_a_run_directory_follows_the_umask(tmp_path: Path, umask: int) -> None:
    from torch import nn

    from convlens.inspect import dump_activations
    from convlens.viz.figure import Explained, new_figure, save

    old = os.umask(umask)
    try:
        run = untrained_run(tmp_path / "run", mnist_path())
        save(Explained(new_figure(1, 1), "A caption.", "An alt."), run / "figures", "f")
        dump_activations(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.randn(3, 1, 5, 5), "0", run / "acts",
                         progress=False)
    finally:
        os.umask(old)
    modes = {str(p.relative_to(run)): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*")}
    assert "model.safetensors" in modes and "acts/0-00000.safetensors" in modes
    files = {name: mode for name, mode in modes.items() if (run / name).is_file()}
    dirs = {name: mode for name, mode in modes.items() if (run / name).is_dir()}
    assert files == dict.fromkeys(files, 0o666 & ~umask)
    assert dirs == dict.fromkeys(dirs, 0o777 & ~umask)
    assert stat.S_IMODE(run.stat().st_mode) == 0o777 & ~umask
