"""`convlens demo`: what it writes (run, figures, index.html, manifest), that it refuses a
directory that is not its own, that a failure leaves nothing behind, and (slow) that its
default recipe reaches 98% test accuracy on the offline MNIST copy."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from _helpers import mnist_full, mnist_path, one_thread, partial_dirs, write_mnist_dir
from convlens import views
from convlens.demo import DemoResult, run_demo
from convlens.errors import OutputError
from convlens.models.run import load_run
from convlens.train import TrainConfig, evaluate

STEMS = ["filters-conv1", "filters-conv2", "maps-conv1", "maps-conv2", "training-curve"]


class Page(HTMLParser):
    """The <img> alt texts and <figcaption> texts of a page, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.captions: list[str] = []
        self._in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.imgs.append(dict(attrs))
        elif tag == "figcaption":
            self._in_caption = True
            self.captions.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data: str) -> None:
        if self._in_caption:
            self.captions[-1] += data


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    out = tmp_path_factory.mktemp("demo") / "convlens-demo"
    with one_thread():
        return run_demo(out, data_dir=mnist_path(), device="cpu", config=TrainConfig(epochs=1))


def test_demo_writes_the_run_and_the_figures(demo: DemoResult) -> None:
    out = demo.out
    assert sorted(p.name for p in out.iterdir()) == ["figures", "index.html", "manifest.json", "run"]
    run = load_run(out / "run")
    assert run.config.model.arch == "seed-cnn" and run.config.data.train_size == 7500
    assert demo.accuracy == run.test_accuracy == run.metrics["epochs"][-1]["test_accuracy"]
    _, test = mnist_full()
    _, acc = evaluate(run.model, test)
    assert acc == demo.accuracy
    assert acc > 0.9  # one epoch already learns
    for stem in STEMS:
        for ext in ("png", "svg", "json"):
            assert (out / "figures" / f"{stem}.{ext}").is_file(), (stem, ext)
    assert set(STEMS) <= set(demo.figures)
    assert all(p.is_file() for p in demo.figures.values())
    assert partial_dirs(out.parent) == []


def test_the_maps_are_of_the_first_test_seven(demo: DemoResult) -> None:
    _, test = mnist_full()
    first = int(np.flatnonzero(test.labels.numpy() == 7)[0])
    for layer in ("conv1", "conv2"):
        sidecar = json.loads((demo.out / "figures" / f"maps-{layer}.json").read_text())
        assert f"test digit 7 (index {first})" in sidecar["caption"]
        assert f"feature maps of layer {layer}" in sidecar["alt"]
    # and they are the maps of that digit under the saved model
    run = load_run(demo.out / "run")
    fig = views.maps(run, views.choose_input(run, index=first, data_dir=mnist_path()), "conv1")
    assert json.loads((demo.out / "figures" / "maps-conv1.json").read_text())["alt"] == fig.alt


def test_index_html_shows_each_figure_with_its_words(demo: DemoResult) -> None:
    page = Page()
    page.feed((demo.out / "index.html").read_text(encoding="utf-8"))
    manifest = json.loads((demo.out / "manifest.json").read_text())
    stems = list(manifest["figures"])
    assert set(STEMS) <= set(stems)
    srcs = [img["src"] for img in page.imgs]
    assert srcs == [f"figures/{s}.png" for s in stems]
    for img, caption, stem in zip(page.imgs, page.captions, stems, strict=True):
        sidecar = json.loads((demo.out / "figures" / f"{stem}.json").read_text())
        assert img["alt"] == sidecar["alt"]
        assert sidecar["caption"] in " ".join(caption.split())
        assert (demo.out / str(img["src"])).is_file()
    text = (demo.out / "index.html").read_text(encoding="utf-8")
    assert f"{demo.accuracy:.2%}" in text


def test_index_html_headings_and_captions_name_each_figure_alike(demo: DemoResult) -> None:
    # issue #11, item 10: the headings said "Figure 1, 1, 2, 2", the captions "Figure 1-6"
    text = (demo.out / "index.html").read_text(encoding="utf-8")
    headings = re.findall(r"<h2>(Figure \w+):", text)
    captions = re.findall(r"<figcaption><strong>(Figure \w+)\.</strong>", text)
    assert headings == captions == ["Figure 1a", "Figure 1b", "Figure 2a", "Figure 2b", "Figure 3", "Figure 4"]
    assert len(re.findall("<h2>", text)) == len(headings)


def test_index_html_names_the_data_by_its_absolute_path(demo: DemoResult) -> None:
    # issue #11, item 10: the page showed the data path relative to where the demo ran
    data = re.search(r"<p>Data: (.+?)\. The run", (demo.out / "index.html").read_text(encoding="utf-8"))
    assert data is not None
    assert Path(data.group(1)).is_absolute() and Path(data.group(1)).samefile(
        next(mnist_path().glob("train-images-idx3-ubyte*")))


def test_manifest(demo: DemoResult) -> None:
    manifest = json.loads((demo.out / "manifest.json").read_text())
    assert manifest["kind"] == "convlens-demo" and manifest["run"] == "run" and manifest["index"] == "index.html"
    assert manifest["test_accuracy"] == demo.accuracy
    for rel in manifest["figures"].values():
        assert (demo.out / rel).is_file()


# --- refusing and failing ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist_dir(tmp_path_factory.mktemp("tiny"), n_train=128, n_test=64)


def tiny_demo(out: Path, tiny_dir: Path, **kwargs: object) -> DemoResult:
    with one_thread():
        return run_demo(out, data_dir=tiny_dir, device="cpu", config=TrainConfig(epochs=1, snapshot_every=1),
                        layers=("conv1",), **kwargs)  # type: ignore[arg-type]  # the tests pass callbacks


def test_an_existing_directory_that_is_not_a_demo_is_refused(tmp_path: Path, tiny_dir: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match=r"holds files convlens did not write \(thesis.tex\).*--out"):
        tiny_demo(mine, tiny_dir, overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        tiny_demo(tmp_path / "afile", tiny_dir)
    assert (tmp_path / "afile").read_text() == "x"


def test_a_failing_figure_leaves_nothing(tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("figure failed")

    monkeypatch.setattr(views, "maps", boom)
    with pytest.raises(RuntimeError, match="figure failed"):
        tiny_demo(tmp_path / "out", tiny_dir)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_keeps_the_previous_demo(tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tiny_demo(tmp_path / "out", tiny_dir)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    import convlens.viz.curves as curves

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(curves, "training_curve", boom)
    with pytest.raises(KeyboardInterrupt):
        tiny_demo(tmp_path / "out", tiny_dir, overwrite=True)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert first.accuracy == json.loads((tmp_path / "out" / "manifest.json").read_text())["test_accuracy"]


def test_ctrl_c_while_training_leaves_nothing(tmp_path: Path, tiny_dir: Path) -> None:
    class Stop:
        def on_start(self, total_steps: int, steps_per_epoch: int) -> None: ...
        def on_step(self, step: int, stats: dict[str, float]) -> None:
            raise KeyboardInterrupt
        def on_epoch(self, record: dict[str, object]) -> None: ...
        def on_end(self) -> None: ...

    with pytest.raises(KeyboardInterrupt):
        tiny_demo(tmp_path / "out", tiny_dir, callbacks=[Stop()])
    assert list(tmp_path.iterdir()) == []


def test_a_second_demo_replaces_the_first_only_with_overwrite(tmp_path: Path, tiny_dir: Path) -> None:
    tiny_demo(tmp_path / "out", tiny_dir)
    with pytest.raises(OutputError, match="already holds a convlens demo output; add --force"):
        tiny_demo(tmp_path / "out", tiny_dir)
    again = tiny_demo(tmp_path / "out", tiny_dir, overwrite=True)
    assert again.index is not None and again.index.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "out" / "figures" / "mine.png").write_bytes(b"mine")  # never deleted, even with overwrite
    with pytest.raises(OutputError, match=r"figures/mine\.png"):
        tiny_demo(tmp_path / "out", tiny_dir, overwrite=True)
    assert (tmp_path / "out" / "figures" / "mine.png").read_bytes() == b"mine"


# --- the real thing ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_default_demo_reaches_98_percent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`convlens demo` with its defaults (8 epochs) on the offline copy, through the real CLI."""
    from convlens.cli import main

    out = tmp_path / "convlens-demo"
    with one_thread(), pytest.raises(SystemExit) as info:
        main(["demo", "--out", str(out), "--data-dir", str(mnist_path()), "--device", "cpu"])
    printed = capsys.readouterr()
    assert info.value.code == 0, printed.err
    run = load_run(out / "run")
    assert run.config.train == {**TrainConfig().to_dict(), "device": "cpu"}  # the defaults
    assert len(run.metrics["epochs"]) == 8
    acc = json.loads((out / "manifest.json").read_text())["test_accuracy"]
    _, test = mnist_full()
    assert evaluate(run.model, test)[1] == acc
    assert acc >= 0.98, f"default demo reached {acc:.2%} test accuracy, below 98%"
    shown = re.search(r"test accuracy: ([0-9.]+)%", printed.out)
    assert shown is not None and float(shown.group(1)) == pytest.approx(100 * acc, abs=0.006)


def test_the_demo_reads_each_split_once_and_trains_through_train_run(tmp_path: Path, tiny_dir: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import convlens.data

    loaded: list[str] = []
    load = convlens.data.load_dataset
    monkeypatch.setattr(convlens.data, "load_dataset", lambda name, split, **kw: loaded.append(split) or load(name, split, **kw))
    calls: list[dict[str, object]] = []
    train_run = views.train_run
    monkeypatch.setattr(views, "train_run", lambda out, **kw: calls.append(kw) or train_run(out, **kw))
    result = tiny_demo(tmp_path / "out", tiny_dir)
    assert loaded == ["train", "test"]  # the figures' input comes from the test split in memory
    assert len(calls) == 1 and calls[0]["arch"] == "seed-cnn"
    train, test = calls[0]["data"]  # type: ignore[misc]  # the (train, test) pair the demo loaded
    assert (train.split, test.split) == ("train", "test")
    assert result.accuracy == load_run(tmp_path / "out" / "run").test_accuracy
