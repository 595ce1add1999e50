"""Colour everywhere: every dataset-level feature on a 3-channel 32×32 image folder (in
memory and streamed), a cifar-cnn run that records its folder and reloads it, and figures
whose drawn arrays show the colours of the data and whose alt texts name them."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import convlens
from _data_beds import colour_images, write_cifar, write_folder
from _helpers import one_thread
from convlens import views
from convlens.data import load_dataset
from convlens.data.stream import StreamingDataset
from convlens.models.run import Run


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():  # a shared machine slows torch's thread pool badly
        yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("colour") / "squares"
    images, labels = colour_images(12, size=32)
    write_folder(root, images, labels, ["0-red", "1-green", "2-blue"])
    return root


@pytest.fixture(scope="module")
def run(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    from convlens.train import TrainConfig

    out = tmp_path_factory.mktemp("colour-run") / "run"
    with one_thread():
        return views.train_run(out, arch="cifar-cnn", dataset=f"folder:{folder}", device="cpu",
                               config=TrainConfig(steps=6, batch_size=8, snapshot_every=3, seed=0))


def test_cifar_cnn_trains_on_colour_and_the_run_records_the_folder(run: Run, folder: Path) -> None:
    assert run.config.model.arch == "cifar-cnn" and run.input_shape == (3, 32, 32)
    assert run.config.data.name == f"folder:{folder.resolve()}"
    assert run.config.data.classes == ("0-red", "1-green", "2-blue") and len(run.config.data.mean) == 3
    # a later command reloads the same data from the recorded spec, checked against its fingerprint
    test = views.dataset_for(run, "test")
    assert test.name == run.config.data.name and test.shape == (3, 32, 32) and len(test) == 6
    assert convlens.load_run(run.path).config.data == run.config.data


def _brute_conv1(model: torch.nn.Module, ds: object) -> torch.Tensor:
    # float64 oracle: the first conv applied by torch to every normalised image
    conv = model.get_submodule("conv1")
    x = ds.normalise(ds.images[:]).double()  # type: ignore[attr-defined]
    return torch.nn.functional.conv2d(x, conv.weight.double(), conv.bias.double(), padding=conv.padding)


@pytest.mark.parametrize("stream", [False, True])
def test_channel_stats_and_topk_on_colour_match_brute_force(run: Run, folder: Path, stream: bool) -> None:
    ds = views.dataset_for(run, "train", data=load_dataset(f"folder:{folder}", "train", stream=stream))
    assert isinstance(ds, StreamingDataset) is stream
    act = _brute_conv1(run.model, ds)  # (N, C, H, W)
    stats = convlens.channel_stats(run.model, ds, "conv1", batch_size=7, progress=False)
    assert torch.allclose(stats["conv1"].mean.double(), act.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(stats["conv1"].std.double(), act.std(dim=(0, 2, 3), unbiased=False), atol=1e-5)
    top = convlens.topk_examples(run.model, ds, "conv1", k=3, batch_size=7, progress=False)
    peak = act.amax(dim=(2, 3))  # (N, C): each input's strongest response per channel
    want = peak.sort(dim=0, descending=True).values[:3].T  # (C, k) the k largest peaks (squares tie)
    got = peak.gather(0, top["conv1"].indices.long().T).T  # the peaks of the inputs it chose
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(top["conv1"].values.double(), want, atol=1e-5)
    assert top["conv1"].crops is not None and top["conv1"].crops.shape[2] == 3  # colour crops


def test_faithfulness_runs_on_colour_streamed_as_in_memory(run: Run, folder: Path) -> None:
    mem = views.faithfulness(run, ["gradcam"], n=6, steps=4, sanity_images=0, split="test")
    st = views.faithfulness(run, ["gradcam"], n=6, steps=4, sanity_images=0, split="test",
                            data=load_dataset(run.config.data.name, "test", stream=True))
    a, b = mem.report.curves()["Grad-CAM"], st.report.curves()["Grad-CAM"]
    assert mem.report.n_images == st.report.n_images == 6
    assert np.allclose(a["deletion"], b["deletion"], atol=1e-6) and np.allclose(a["insertion"], b["insertion"], atol=1e-6)


def test_cam_overlay_draws_the_colour_image_and_names_its_colours(run: Run) -> None:
    test = views.dataset_for(run, "test")
    i = test.index_of("0-red")
    chosen = views.choose_input(run, index=i)
    fig = views.cam_view(run, chosen, method="gradcam", layer="conv5")
    drawn = fig.data["image"]
    assert drawn.shape == (32, 32, 3)
    assert np.array_equal(drawn, test.images[i].numpy().transpose(1, 2, 0) / 255.0)  # the pixels, not stretched
    assert np.array_equal(fig.figure.axes[0].images[0].get_array(), drawn)
    assert "a colour image of 32×32 RGB pixels" in fig.alt and "pixel)" in fig.alt


def test_maps_of_a_colour_input_show_it_in_colour(run: Run) -> None:
    test = views.dataset_for(run, "test")
    i = test.index_of("0-red")
    fig = views.maps(run, views.choose_input(run, index=i), "conv1")
    shown = fig.figure.axes[0].images[0].get_array()
    assert shown.shape == (32, 32, 3) and np.array_equal(shown, test.images[i].numpy().transpose(1, 2, 0) / 255.0)
    red = shown[..., 0] > 0.6  # the red square: red channel high, green and blue low
    assert red.sum() == 10 * 10 and (shown[red][:, 1:] < 0.2).all()
    assert "a colour image, 32×32 RGB pixels" in fig.alt


def test_rgb_filters_combined_and_per_channel_with_their_colours(run: Run) -> None:
    model = run.model
    w = model.get_submodule("conv1").weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():  # filter 0: weighs red up, green and blue down
            w[0] = 0.0
            w[0, 0] = 0.5
            w[0, 1:] = -0.5
        fig = views.filters(model, "conv1")
        per = views.filters(model, "conv1", rgb=False)
    finally:
        with torch.no_grad():
            w.copy_(saved)
    weights = fig.data["weights"]
    m = float(np.abs(weights).max())
    tile = fig.data["rgb_tiles"][0].get_array()
    assert np.allclose(tile, np.clip(0.5 + weights[0].transpose(1, 2, 0) / (2 * m), 0, 1))
    assert (tile[..., 0] > tile[..., 1]).all() and (tile[..., 0] > tile[..., 2]).all()  # drawn red
    assert "0 (" in fig.alt and "responds most to red" in fig.alt and "colour (RGB) tiles" in fig.alt
    assert "in colour" in fig.caption
    mosaic = per.data["mosaic"]
    assert np.allclose(mosaic[:3, :3], weights[0, 0]) and np.allclose(mosaic[:3, 4:7], weights[0, 1])
    assert [t.get_text() for t in per.figure.axes[0].get_xticklabels()] == ["R", "G", "B"]
    assert "columns are the red, green and blue channels" in per.alt


def test_topk_gallery_draws_the_rgb_filter_in_colour(run: Run) -> None:
    view = views.topk(run, "conv1", k=2, shown=2, progress=False)
    fig = view.figures["conv1"]
    tile = fig.figure.axes[0].images[0].get_array()
    f = fig.data["filters"][0].astype(np.float64)
    assert tile.shape == (3, 3, 3)
    assert np.allclose(tile, np.clip(0.5 + f.transpose(1, 2, 0) / (2 * np.abs(f).max()), 0, 1))
    assert "filter in colour" in fig.caption


def _invoke(*args: str | Path) -> None:
    from click.testing import CliRunner

    import convlens.cli  # noqa: F401  (attaches the commands to the app)
    from convlens.cli._app import app

    with one_thread():
        res = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output


def test_cli_trains_cifar_cnn_on_cifar10_and_a_folder(tmp_path: Path, folder: Path) -> None:
    bed = write_cifar(tmp_path / "www", per_file=8)
    offline = tmp_path / "offline"
    with tarfile.open(bed.archive) as tar:
        tar.extractall(offline, filter="data")
    _invoke("train", "--arch", "cifar-cnn", "--dataset", "cifar10", "--data-dir", offline, "--steps", "2",
            "--batch-size", "8", "--out", tmp_path / "run-cifar", "--device", "cpu")
    run = convlens.load_run(tmp_path / "run-cifar")
    assert run.config.data.name == "cifar10" and run.input_shape == (3, 32, 32) and run.config.data.train_size == 40
    out = tmp_path / "run-folder"
    _invoke("train", "--arch", "cifar-cnn", "--dataset", f"folder:{folder}?size=24", "--steps", "2",
            "--batch-size", "8", "--out", out, "--device", "cpu")
    assert convlens.load_run(out).input_shape == (3, 24, 24)
    _invoke("maps", out, "--index", "0", "--layer", "conv1")  # the run reloads its folder at 24×24
    assert (out / "figures").is_dir()


def test_a_bad_dataset_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    import os

    res = subprocess.run([sys.executable, "-m", "convlens", "faithfulness", "--model", "torch.nn:Identity",
                          "--dataset", f"folder:{tmp_path / 'nope'}"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"}, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0 and len(lines) == 1 and "does not exist" in lines[0] and "nope" in lines[0], res.stderr


def test_a_user_model_reads_a_folder_at_its_own_size(folder: Path) -> None:
    from convlens.models.handle import open_model

    h = open_model(spec="torch.nn:Identity", dataset=f"folder:{folder}", input_shape="3,16,16")
    assert h.data.classes == ("0-red", "1-green", "2-blue") and len(h.data.mean) == 3
    ds = views.dataset_for(h, "test")
    assert ds.shape == (3, 16, 16) and len(ds) == 6  # resized and centre-cropped from 32×32
    same = open_model(spec="torch.nn:Identity", dataset=f"folder:{folder}")
    assert same.input_shape == (3, 32, 32)  # the folder's own shape by default
    assert views.dataset_for(same, "test").mean == h.data.mean
