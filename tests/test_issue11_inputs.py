"""Issue #11, findings 4, 5, 9 and 10: budgets for requests whose cost grows with an
argument, data checked against its name and against the run it is used with, RGB models
fed on every command, and the smaller notes (random weights, `layers --arch`, progress)."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _helpers import cli_call, mnist_full, mnist_path, untrained_run, write_mnist_dir
from convlens import views
from convlens.data import load_dataset, write_idx
from convlens.data.fingerprint import NEAR, check_named, fingerprint, look_alike
from convlens.errors import ConfigError, ConvlensNote, DataError
from convlens.models.run import Run, load_run


def one_line(err: str, *fragments: str) -> str:
    lines = err.strip("\n").splitlines()  # a failing command prints no notes, only its error
    assert len(lines) == 1, err
    assert lines[0].startswith("convlens: error: "), lines[0]
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def old_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run as convlens wrote them before fingerprints (no ``fingerprints`` in its data)."""
    return untrained_run(tmp_path_factory.mktemp("old") / "run", mnist_path())


@pytest.fixture(scope="module")
def new_run(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """A run trained (2 steps) on the tiny MNIST copy: it records its data's fingerprints."""
    from convlens.train import TrainConfig

    out = tmp_path_factory.mktemp("new") / "run"
    views.train_run(out, data_dir=tiny_dir, config=TrainConfig(steps=2, snapshot_every=0), device="cpu")
    return out


def _write_split_dir(folder: Path, transform: object, n: int = 200) -> Path:
    """An IDX directory of the first ``n`` MNIST images of each split passed through ``transform``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, ds in zip(("train", "t10k"), mnist_full(), strict=True):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", transform(ds.images.numpy()[:n, 0]))  # type: ignore[operator]
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", ds.labels.numpy()[:n].astype(np.uint8))
    return folder


# --- finding 4: budgets --------------------------------------------------------------------------


def _no_data_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import convlens.inspect
    import convlens.inspect.topk

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data pass ran before the budget was checked")

    monkeypatch.setattr(convlens.inspect, "topk_examples", refuse)
    monkeypatch.setattr(convlens.inspect.topk, "topk_examples", refuse)


def test_topk_k_over_budget_fails_fast_with_one_line(old_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _no_data_pass(monkeypatch)  # the budget is checked before any data is read
    code, _, err = cli_call(capsys, "topk", str(old_run), "--k", "100000", "--channels", "0", "--out", str(tmp_path))
    assert code == 1
    one_line(err, "k=100000", "at most 100", "--k 100")
    assert not any(tmp_path.iterdir())


def test_topk_gallery_over_budget_names_what_fits(old_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _no_data_pass(monkeypatch)
    code, _, err = cli_call(capsys, "topk", str(old_run), "--k", "50", "--out", str(tmp_path))
    assert code == 1
    one_line(err, "16 channels × 51 tiles (816)", "320", "--k 19 or less", "--channels with at most 6")


def test_feature_maps_over_budget_name_channels_and_channels_pick_maps(old_run: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from convlens.viz.maps import MAX_MAP_TILES, maps_figure

    image = np.zeros((1, 8, 8))
    with pytest.raises(ConfigError, match=f"more than the {MAX_MAP_TILES} one figure draws.*--channels"):
        maps_figure(image, np.zeros((MAX_MAP_TILES + 1, 4, 4)), "wide")
    maps = np.arange(3 * 4 * 4, dtype=np.float64).reshape(3, 4, 4)
    fig = maps_figure(image, maps, "conv", channels=[5, 9, 12])
    assert fig.data["channels"] == [5, 9, 12] and "12 (max 47)" in fig.alt  # titled by the layer's numbers
    code, _, err = cli_call(capsys, "maps", str(old_run), "--index", "0", "--layer", "conv2", "--channels", "3-5,30",
                              "--out", str(tmp_path))
    assert code == 0, err
    drawn = [f.name for f in tmp_path.iterdir() if f.suffix == ".json"]
    assert drawn == ["maps-conv2-conv-test-index0-ch3-5-30.json"]
    code, _, err = cli_call(capsys, "maps", str(old_run), "--index", "0", "--layer", "conv2", "--channels", "40",
                            "--out", str(tmp_path / "other"))
    assert code == 1
    one_line(err, "channels [40] are out of range", "0..31")


def test_faithfulness_steps_over_budget_fail_before_any_work(old_run: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import convlens.explain.api
    from convlens.explain.faithfulness import MAX_CURVE_STEPS

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("explanations ran before the budget was checked")

    monkeypatch.setattr(convlens.explain.api, "explain", refuse)
    code, _, err = cli_call(capsys, "faithfulness", str(old_run), "--n", "4", "--steps", "100000",
                            "--out", str(tmp_path))
    assert code == 1
    one_line(err, "steps=100000", f"at most {MAX_CURVE_STEPS}", f"--steps {MAX_CURVE_STEPS}")


def test_topk_budgets_live_in_the_library() -> None:
    from convlens.inspect import topk_examples
    from convlens.inspect.topk import MAX_K
    from convlens.viz.inspect import MAX_GALLERY_TILES, topk_gallery

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))
    with pytest.raises(ConfigError, match=f"at most {MAX_K}"):
        topk_examples(model, torch.randn(4, 1, 6, 6), "0", k=MAX_K + 1, progress=False)
    report = topk_examples(model, torch.randn(400, 1, 6, 6), "0", k=MAX_K, progress=False)
    with pytest.raises(ConfigError, match=str(MAX_GALLERY_TILES)):
        topk_gallery(report["0"])  # 4 channels × 101 tiles
    assert topk_gallery(report["0"], channels=[0]).data["values"].shape == (1, MAX_K)  # 1 × 101 fits


def test_topk_progress_covers_the_drawing(old_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import convlens._progress
    import convlens.inspect.passes
    from convlens.models.handle import open_model

    seen: list[tuple[str, object, float]] = []
    real = convlens._progress.progress_bar

    def spy(description: str, total: float | None = None, enabled: bool | None = None, **kw: object) -> object:
        bar = real(description, total, False)
        seen.append((description, total, 0.0))
        advance = bar.advance

        def counted(n: float = 1) -> None:
            seen[-1] = (seen[-1][0], seen[-1][1], seen[-1][2] + n)
            advance(n)

        bar.advance = counted  # type: ignore[method-assign]
        return bar

    monkeypatch.setattr(convlens._progress, "progress_bar", spy)
    monkeypatch.setattr(convlens.inspect.passes, "progress_bar", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvlensNote)
        view = views.topk(open_model(old_run), "conv1", k=3, channels=[0, 1, 2])
    assert seen == [("top-k", 1500, 1500.0), ("drawing the top-k gallery", 3, 3.0)]
    assert set(view.figures) == {"conv1"}


def test_input_pixels_have_a_budget() -> None:
    from convlens.models.handle import MAX_INPUT_PIXELS, open_model

    with pytest.raises(ConfigError, match="4096×4096"):
        open_model(spec="torch.nn:Identity", input_shape="3,5000,5000")
    assert MAX_INPUT_PIXELS == 4096 * 4096


# --- finding 5: the data against its name, and against the run -----------------------------------


def test_train_refuses_mnist_files_named_fashion_mnist(tiny_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli_call(capsys, "train", "--dataset", "fashion-mnist", "--data-dir", str(tiny_dir), "--steps", "1",
                            "--out", str(tmp_path / "run"))
    assert code == 1
    one_line(err, "look like MNIST, not Fashion-MNIST", "--dataset mnist", "--data-dir")
    assert not (tmp_path / "run").exists()
    with pytest.raises(DataError, match="not Kuzushiji-MNIST"):
        load_dataset("kmnist", "test", data_dir=tiny_dir)


def test_every_mix_of_digits_passes_as_mnist_and_brighter_data_does_not() -> None:
    train, _ = mnist_full()
    imgs, labels = train.images.numpy()[:, 0], train.labels.numpy()
    for digit in range(10):  # a set of one digit only is the furthest MNIST gets from its mean
        assert look_alike(fingerprint(imgs[labels == digit]).mean, "mnist") is None, digit
    check_named("mnist", imgs[:100], "x", "train")
    thick = np.maximum.reduce([np.roll(imgs[:500], s, axis=a) for s in (-1, 0, 1) for a in (1, 2)])  # dilated strokes
    assert look_alike(fingerprint(thick).mean, "mnist") is not None or fingerprint(thick).mean < 0.246
    assert look_alike(0.2860, "mnist").name == "fashion-mnist"
    assert look_alike(0.1918, "mnist").name == "kmnist"
    assert look_alike(0.1307, "kmnist").name == "mnist"
    assert look_alike(0.87, "mnist") is None  # inverted digits are no registered dataset
    assert look_alike(0.2860 + NEAR + 0.01, "mnist") is None


def test_an_official_file_of_another_dataset_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convlens.data import sources

    folder = write_mnist_dir(tmp_path / "d")
    digest = hashlib.md5((folder / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    fashion = sources.SOURCES["fashion-mnist"]
    monkeypatch.setitem(sources.SOURCES, "fashion-mnist", dataclasses.replace(
        fashion, checksums={**fashion.checksums, "train-images-idx3-ubyte.gz": f"md5:{digest}"}))
    with pytest.raises(DataError, match="is the official Fashion-MNIST train images file"):
        load_dataset("mnist", "train", data_dir=folder)
    assert len(load_dataset("mnist", "train", data_dir=folder, check=False)) == 256


def test_a_run_records_its_data_and_refuses_other_data(new_run: Path, tiny_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    prints = json.loads((new_run / "config.json").read_text())["data"]["fingerprints"]
    assert set(prints) == {"train", "test"} and prints["test"]["shape"] == [1, 28, 28]
    assert prints["test"]["n"] == 64 and len(prints["test"]["sha256"]) == 64
    # the same files, and another MNIST copy, are accepted
    assert views.choose_input(_load(new_run), digit=7, data_dir=tiny_dir).true_class == 7
    assert views.dataset_for(_load(new_run), "test", data_dir=mnist_path()).name == "mnist"
    # inverted digits pass the name check (they are no registered dataset) but not the run's
    inverted = _write_split_dir(tmp_path / "inv", lambda a: 255 - a)
    code, _, err = cli_call(capsys, "maps", str(new_run), "--digit", "7", "--data-dir", str(inverted),
                            "--out", str(tmp_path / "f"))
    assert code == 1
    one_line(err, "does not look like the data run", "mean pixel 0.8", "point --data-dir at the files it was trained on",
             str(tiny_dir))


def _load(path: Path) -> Run:
    return load_run(path)


def test_data_with_other_classes_or_shape_is_refused(new_run: Path) -> None:
    _, test = mnist_full()
    relabelled = dataclasses.replace(test, classes=tuple("abcdefghij"))
    with pytest.raises(DataError, match="has classes"):
        views.dataset_for(_load(new_run), "test", data=relabelled)
    small = dataclasses.replace(test, images=test.images[:, :, :20, :20].contiguous())
    with pytest.raises(DataError, match=r"20×20 images but run .* trained on 1×28×28"):
        views.dataset_for(_load(new_run), "test", data=small)


def test_an_old_run_without_fingerprints_loads_and_says_so_once(old_run: Path, tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "convlens", "cam", str(old_run), "--digit", "7", "--out",
                          str(tmp_path)], capture_output=True, text=True, env={**_env(), "COLUMNS": "200"}, timeout=300)
    assert res.returncode == 0, res.stderr
    notes = [line for line in res.stderr.splitlines() if line.startswith("convlens: note: ")]
    assert len(notes) == 1 and "records no fingerprint" in notes[0], res.stderr
    assert "Warning" not in res.stderr


def _env() -> dict[str, str]:
    import os

    env = {**os.environ, "CONVLENS_DATA_DIR": str(mnist_path()), "MPLBACKEND": "Agg"}
    env.pop("CONVLENS_DEBUG", None)
    return env


# --- finding 9: RGB models on every command ------------------------------------------------------


@pytest.fixture(scope="module")
def rgb_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "colour.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(path)
    return path


RGB = ("--model", "zoo:RGBNet", "--input-shape", "3,32,32")


@pytest.mark.parametrize("command", [["maps", "--layer", "conv1"], ["cam"]])
@pytest.mark.parametrize("given", ["image", "digit"])
def test_rgb_model_takes_images_and_digits_with_its_normalisation(
        command: list[str], given: str, rgb_image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = ["--image", str(rgb_image)] if given == "image" else ["--digit", "7"]
    code, _, err = cli_call(capsys, *command, *RGB, *source, "--out", str(tmp_path))
    assert code == 1
    one_line(err, "reads 3 channels", "--mean and --std")
    code, out, err = cli_call(capsys, *command, *RGB, *source, "--mean", "0.49,0.48,0.45", "--std", "0.25",
                              "--out", str(tmp_path))
    assert code == 0, err
    assert "(+ .svg, .json)" in out


def test_rgb_model_streams_the_dataset_fitted_to_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["stats"], ["topk", "--layer", "conv2", "--k", "3"]):
        code, out, err = cli_call(capsys, *command, *RGB, "--mean", "0.5", "--std", "0.25", "--out", str(tmp_path))
        assert code == 0, err
        assert "1,500" in out


def test_rgb_model_on_faithfulness_and_the_conv_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    norm = ("--mean", "0.5", "--std", "0.25")
    code, out, err = cli_call(capsys, "faithfulness", *RGB, *norm, "--n", "4", "--sanity-images", "0",
                              "--out", str(tmp_path / "f"))
    assert code == 0, err
    assert (tmp_path / "f" / "faithfulness-gradcam-pred-test-n4.png").is_file(), out
    code, out, err = cli_call(capsys, "conv", "apply", *RGB, *norm, "--digit", "7", "--kernel", "sobel_x",
                              "--filter", "conv1:0", "--out", str(tmp_path / "c"))
    assert code == 0, err
    assert "32×32" in out  # the digit fitted to the model's 3×32×32 input


def test_handle_normalisation_and_fitted_data() -> None:
    from convlens.data.transforms import fit_images
    from convlens.models.handle import open_model

    h = open_model(spec="zoo:RGBNet", input_shape="3,32,32", mean="0.5,0.4,0.3", std="0.2")
    assert h.normalisation() == ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    ds = views.dataset_for(h, "test")
    assert ds.shape == (3, 32, 32) and ds.mean == (0.5, 0.4, 0.3)
    x = fit_images(torch.full((2, 1, 28, 28), 200, dtype=torch.uint8), (3, 32, 32))
    assert x.dtype == torch.uint8 and bool((x == 200).all())
    for mean, std, message in (("0.5,0.5", "0.2", "2 values"), ("0.5", None, "together"), ("a", "1", "numbers"),
                               ("0.5", "0", "positive")):
        with pytest.raises(ConfigError, match=message):
            open_model(spec="zoo:RGBNet", input_shape="3,32,32", mean=mean, std=std)


# --- finding 10 ----------------------------------------------------------------------------------


def test_model_without_weights_says_it_is_untrained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli_call(capsys, "layers", "--model", "zoo:SeedCNN")
    assert code == 0
    assert err.startswith("convlens: note: --model zoo:SeedCNN without --weights: the model has the random weights")
    assert err.count("\n") == 1
    torch.save(__import__("zoo").SeedCNN().state_dict(), tmp_path / "w.pt")
    code, _, err = cli_call(capsys, "layers", "--model", "zoo:SeedCNN", "--weights", str(tmp_path / "w.pt"))
    assert code == 0 and err == ""


def test_import_weights_suggests_a_command_that_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pt")
    code, _, err = cli_call(capsys, "import-weights", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "run"))
    assert code == 1
    line = one_line(err, "does not fit seed-cnn")
    suggested = line.split("`")[1]
    assert suggested == "convlens layers --arch seed-cnn --dataset mnist"
    code, out, err = cli_call(capsys, *suggested.split()[1:])
    assert code == 0 and err == ""
    assert "conv1" in out and "fc" in out and "416" in out


def test_long_jobs_print_no_bar_without_a_terminal(old_run: Path, tiny_dir: Path, tmp_path: Path) -> None:
    """Off a terminal (pipes; FORCE_COLOR set as CI systems do) no bar lines, carriage
    returns or blank lines appear, for training, the dataset passes, perturbation methods
    and their drawing."""
    run = tmp_path / "run"
    shutil.copytree(old_run, run)
    env = {**_env(), "FORCE_COLOR": "1", "COLUMNS": "200"}
    for args in (["train", "--steps", "3", "--data-dir", str(tiny_dir), "--out", str(tmp_path / "trained")],
                 ["topk", str(run), "--k", "4"], ["stats", str(run)],
                 ["cam", str(run), "--digit", "3", "--method", "occlusion"],
                 ["faithfulness", str(run), "--n", "8", "--sanity-images", "0"]):
        res = subprocess.run([sys.executable, "-m", "convlens", *args], capture_output=True, text=True, env=env,
                             timeout=300)
        assert res.returncode == 0, (args, res.stderr)
        err = "\n".join(line for line in res.stderr.splitlines() if not line.startswith("convlens: note: "))
        assert err == "", (args, err)  # no bar lines, no blank lines
        assert "\r" not in res.stdout and "\x1b[?25l" not in res.stdout, (args, res.stdout[-500:])
        assert "\n\n" not in res.stdout.strip("\n").replace("\x1b[0m", ""), (args, res.stdout[-800:])


def test_padding_beyond_the_engines_budget_is_refused_in_one_line(capsys: pytest.CaptureFixture[str],
                                                                   mnist_dir: Path, tmp_path: Path) -> None:
    from convlens.conv import conv2d, pad2d
    from convlens.conv.ops import MAX_ELEMENTS

    x = np.ones((1, 1, 28, 28))
    with pytest.raises(ConfigError, match=f"more than the {MAX_ELEMENTS:,}.*--padding"):
        conv2d(x, np.ones((1, 1, 3, 3)), padding=10**5)
    with pytest.raises(ConfigError, match="less padding"):
        pad2d(x, (10**5, 10**5, 10**5, 10**5))
    assert conv2d(x, np.ones((1, 1, 3, 3)), padding=1).shape == (1, 1, 28, 28)  # ordinary padding still works
    for command in (["explain", "--digit", "7", "--kernel", "sobel_x", "--padding", "100000"],
                    ["apply", "--digit", "7", "--kernel", "sobel_x", "--padding", "2000000000", "--out", str(tmp_path)]):
        code, _, err = cli_call(capsys, "conv", *command, "--data-dir", str(mnist_dir))
        assert code == 1
        one_line(err, "the padded input would hold", "use less padding (--padding)")
