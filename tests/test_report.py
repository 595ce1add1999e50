"""The self-contained report: byte-identical on two runs, nothing outside the file, every
figure captioned and described, the convolution's numbers equal torch's, sections left
out when their data is absent, and the output policy."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _helpers import cli_call, small_run


class Page(HTMLParser):
    """Every tag with its attributes, and the text of the h2 headings."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag: str) -> None:
        self._in_h2 = False if tag == "h2" else self._in_h2

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.h2.append(data)


def parse(text: str) -> Page:
    p = Page()
    p.feed(text)
    return p


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_run(tmp_path_factory).run.path


@pytest.fixture(scope="module")
def report(run_dir: Path, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> dict[str, bytes]:
    """The report written twice by the real command (two processes' worth of state: same inputs)."""
    from convlens.cli import main

    out = tmp_path_factory.mktemp("report")
    texts = {}
    for name in ("a.html", "b.html"):
        with pytest.raises(SystemExit) as e:
            main(["report", str(run_dir), "--out", str(out / name), "--methods", "gradcam,saliency",
                  "--data-dir", str(mnist_dir)])
        assert e.value.code == 0
        texts[name] = (out / name).read_bytes()
    return texts


def test_byte_identical_on_two_runs(report: dict[str, bytes]) -> None:
    assert report["a.html"] == report["b.html"]


def test_nothing_outside_the_file(report: dict[str, bytes]) -> None:
    page = parse(report["a.html"].decode())
    refs = [v for _, attrs in page.tags for k, v in attrs.items() if k in ("src", "href", "srcset", "action") and v]
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs), [r[:40] for r in refs]
    assert not re.search(rb"url\(|@import|https?://", report["a.html"])


def test_sections_figures_captions_and_alt_texts(report: dict[str, bytes]) -> None:
    text = report["a.html"].decode()
    page = parse(text)
    assert page.h2 == ["Contents", "Model card", "The convolution, worked out", "Filters", "Feature maps",
                       "Class activation maps and their faithfulness"]
    toc = [a["href"] for t, a in page.tags if t == "a" and (a.get("href") or "").startswith("#")]
    ids = {a.get("id") for _, a in page.tags}
    assert all(h[1:] in ids for h in toc)
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(imgs) >= 8 and all(a.get("alt") for a in imgs)
    assert text.count("<figure") == text.count("<figcaption") == len(imgs)
    assert "conv1" in text and "receptive field" in text and "16×28×28" in text  # the layer table
    assert "@media print" in text and 'name="generator" content="convlens report"' in text


def test_the_convolution_worked_out_equals_torch(report: dict[str, bytes], run_dir: Path, mnist_dir: Path) -> None:
    from convlens import views
    from convlens.models.run import load_run

    run = load_run(run_dir)
    chosen = views.choose_input(run, digit=7, data_dir=mnist_dir)
    conv1 = run.model.conv1
    with torch.no_grad():
        out = F.conv2d(chosen.x.double(), conv1.weight.double(), conv1.bias.double(), padding=conv1.padding)[0, 0]
    i, j = np.unravel_index(int(out.argmax()), tuple(out.shape))
    text = report["a.html"].decode()
    m = re.search(r"filter 0 at output position \((\d+), (\d+)\).*?that is ([-\d.e]+)", text)
    assert m is not None and (int(m[1]), int(m[2])) == (i, j)
    assert float(m[3]) == pytest.approx(float(out[i, j]), rel=1e-5)


def test_saved_results_plug_in_and_absent_ones_are_left_out(run_dir: Path, tmp_path: Path, mnist_dir: Path) -> None:
    import shutil

    from convlens import views
    from convlens.models.run import load_run
    from convlens.report import build_report
    from convlens.viz.figure import save

    run_copy = tmp_path / "run"
    shutil.copytree(run_dir, run_copy)
    fig = views.filters(load_run(run_copy), "conv1")
    save(fig, run_copy / "compare", "cka")
    (run_copy / "compare" / "compare.json").write_text(json.dumps({"split": "test", "figures": {
        "cka": {"caption": "the CKA caption", "alt": "the CKA alt text"}}}))
    text = build_report(load_run(run_copy), data_dir=mnist_dir, methods=("saliency",),
                        sections=("model", "saved-comparison", "diagnosis", "audit"))
    assert parse(text).h2 == ["Contents", "Model card", "Comparison (computed earlier)"]
    assert 'alt="the CKA alt text"' in text and "the CKA caption" in text


def test_compare_adds_the_comparison(run_dir: Path, tmp_path: Path, mnist_dir: Path) -> None:
    from _helpers import untrained_run, write_mnist_dir
    from convlens.models.run import load_run
    from convlens.report import build_report

    other = untrained_run(tmp_path / "other", mnist_dir)
    small = write_mnist_dir(tmp_path / "mnist", n_train=64, n_test=64)  # a small split keeps CKA quick
    text = build_report(load_run(run_dir), compare=load_run(other), data_dir=small, digits=(), methods=(),
                        sections=("comparison",))
    assert parse(text).h2 == ["Contents", "Comparison with another model"]
    assert "CKA" in text and text.count("<img") >= 3


def test_output_policy(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], mnist_dir: Path) -> None:
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my own notes</p>")
    for force in ((), ("--force",)):
        code, _, err = cli_call(capsys, "report", str(run_dir), "--out", str(mine), "--data-dir", str(mnist_dir), *force)
        assert code == 1 and "is not a report convlens wrote, so it is never replaced" in err
    assert mine.read_text() == "<p>my own notes</p>"
    earlier = tmp_path / "report.html"
    earlier.write_text('<!doctype html>\n<meta name="generator" content="convlens report">\nold')
    code, _, err = cli_call(capsys, "report", str(run_dir), "--out", str(earlier), "--data-dir", str(mnist_dir))
    assert code == 1 and "already exists; add --force" in err and earlier.read_text().endswith("old")
    code, _, err = cli_call(capsys, "report", str(run_dir), "--out", str(earlier), "--data-dir", str(mnist_dir),
                            "--methods", "gradcam", "--force")
    assert code == 0 and "<h1>convlens report: seed-cnn</h1>" in earlier.read_text()
    code, _, err = cli_call(capsys, "report", str(run_dir), "--out", str(tmp_path / "x.html"), "--methods", "gradkam",
                            "--data-dir", str(mnist_dir))
    assert code == 1 and "unknown explanation method 'gradkam'" in err and not (tmp_path / "x.html").exists()
