"""The app and the report in a real browser: Python Playwright driving Debian's Chromium.

Pick a digit, switch layer, stage and CAM method, upload an image, draw a digit with
pointer events, click an output position in the convolution explainer: each time the
page's numbers (``data-numbers`` of the view) equal the library's for the same input.
axe-core (from npm, under .cache/axe) reports no violation on any page or on the report,
which opens from file:// without a single network request. Screenshots go to
``$CONVLENS_SCREENSHOTS`` (default: the test's temporary directory).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _helpers import REPO, mnist_full, small_run

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
AXE = REPO / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's Chromium is not installed (/usr/bin/chromium): apt-get install -y "
                                       "chromium (.ci/run does)")
sync_api = pytest.importorskip("playwright.sync_api", reason="Python Playwright is part of the test extra")
pytest.importorskip("uvicorn", reason="the web app needs the app extra (uvicorn)")


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = Path(os.environ.get("CONVLENS_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from convlens.app import AppState
    from convlens.models.handle import open_model

    return AppState.from_handle(open_model(small_run(tmp_path_factory).run.path), data=mnist_full()[1])


@pytest.fixture(scope="module")
def server(state: Any) -> Iterator[str]:
    import uvicorn

    from convlens.app import create_app

    srv = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the app did not start")
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # bypass_csp: Playwright's waits and axe's injection evaluate scripts the app's CSP forbids
    context = browser.new_context(viewport={"width": 1200, "height": 900}, bypass_csp=True)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()


def settled(page: Any) -> None:
    """Wait until every view has loaded and nothing is pending."""
    page.wait_for_function("""() => document.querySelectorAll('[data-ready="0"]').length === 0
        && !/Working|Uploading/.test((document.getElementById('status') || {}).textContent || '')""")


def numbers(page: Any, selector: str) -> dict[str, Any]:
    return json.loads(page.eval_on_selector(selector, "el => el.dataset.numbers"))


def wait_numbers(page: Any, selector: str, check: str) -> dict[str, Any]:
    page.wait_for_function(f"""() => {{ const el = document.querySelector('{selector}');
        if (!el || el.dataset.ready !== '1' || !el.dataset.numbers) return false;
        const n = JSON.parse(el.dataset.numbers); return {check}; }}""")
    settled(page)
    return numbers(page, selector)


def _install_axe() -> None:
    """axe-core comes from npm into the git-ignored .cache/axe, on first use (so the README's
    test command needs no extra step); without npm the accessibility checks cannot run."""
    if AXE.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("axe-core is not installed and npm is missing: npm install --prefix .cache/axe axe-core@4")
    done = subprocess.run([npm, "install", "--silent", "--prefix", str(AXE.parents[2]), "axe-core@4"],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not AXE.exists():
        pytest.fail(f"npm install --prefix .cache/axe axe-core@4 failed: {done.stderr.strip()[-300:]}")


def axe(page: Any) -> list[dict[str, Any]]:
    _install_axe()
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document)")
    return [{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]][:3]} for v in result["violations"]]


def _x(state: Any, index: int) -> torch.Tensor:
    return state.data.normalise(state.data.images[index: index + 1])


def _probs(state: Any, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return state.handle.model(x).softmax(1)[0].double().numpy()


def test_pick_a_digit_switch_layer_stage_and_method(page: Any, server: str, state: Any, shots: Path) -> None:
    import convlens

    page.goto(server + "/")
    settled(page)
    page.select_option("#class", "3")
    page.fill("#nth", "1")
    page.click("#use-class")
    got = wait_numbers(page, "#prediction", "n.input === 'digit:3:1'")
    index = int(np.flatnonzero(state.data.labels.numpy() == 3)[1])
    np.testing.assert_allclose(got["probabilities"], _probs(state, _x(state, index)), rtol=1e-6, atol=1e-7)

    page.select_option("#maps-layer", "conv2")
    page.select_option("#maps-stage", "pool")
    got = wait_numbers(page, "#maps-figure", "n.layer === 'conv2' && n.stage === 'pool'")
    m = state.handle.model
    with torch.no_grad():
        ref = m.pool2(m.relu2(m.conv2(m.pool1(m.relu1(m.conv1(_x(state, index)))))))[0].amax(dim=(1, 2))
    np.testing.assert_allclose(got["maxima"], ref.numpy(), rtol=1e-5, atol=1e-6)
    assert page.get_attribute("#maps-img", "alt") == got["alt"]

    page.select_option("#cam-method", "layercam")
    page.select_option("#cam-layer", "relu2")
    got = wait_numbers(page, "#cam-figure", "n.method === 'layercam' && n.layers[0] === 'relu2'")
    ref_cam = convlens.cam(m, _x(state, index), method="layercam", layer="relu2")
    np.testing.assert_allclose(got["heat"], ref_cam.normalised[0].double().numpy(), atol=1e-6)
    assert numbers(page, "#cam-scores") == got["scores"]
    page.screenshot(path=str(shots / "app-explore.png"), full_page=True)


def test_draw_a_digit_with_pointer_events(page: Any, server: str, state: Any, shots: Path) -> None:
    from convlens import views

    page.goto(server + "/")
    settled(page)
    box = page.locator("#pad").bounding_box()
    x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x0 + 0.5 * w, y0 + 0.15 * h)  # a "1": one stroke from top to bottom
    page.mouse.down()
    for t in np.linspace(0.15, 0.85, 12):
        page.mouse.move(x0 + (0.5 - 0.05 * t) * w, y0 + t * h)
    page.mouse.up()
    drawn = page.eval_on_selector("#pad", "c => c.toDataURL('image/png')")
    page.click("#use-drawing")
    got = wait_numbers(page, "#prediction", "n.input.startsWith('upload:')")
    assert page.text_content("#current") == "drawn digit"
    png = base64.b64decode(drawn.split(",", 1)[1])
    chosen = views.image_input(state.handle, png)
    assert int(chosen.pixels.max()) == 255 and int(chosen.pixels.min()) == 0  # a light stroke on black
    np.testing.assert_allclose(got["probabilities"], _probs(state, chosen.x), rtol=1e-6, atol=1e-7)
    page.screenshot(path=str(shots / "app-drawn.png"))


def test_upload_an_image(page: Any, server: str, state: Any, tmp_path: Path) -> None:
    from PIL import Image

    from convlens import views

    path = tmp_path / "digit.png"
    Image.fromarray(255 - state.data.images[11, 0].numpy()).resize((112, 112)).save(path)  # dark ink on paper
    page.goto(server + "/")
    settled(page)
    page.set_input_files("#file", str(path))
    page.click("#use-file")
    got = wait_numbers(page, "#prediction", "n.input.startsWith('upload:')")
    ref = views.predict(state.handle, views.choose_input(state.handle, image=path))
    np.testing.assert_allclose(got["probabilities"], ref.probabilities, rtol=1e-6, atol=1e-7)


def test_conv_explainer_click_an_output_position(page: Any, server: str, state: Any, shots: Path) -> None:
    page.goto(server + "/conv")
    settled(page)
    page.fill("#conv-stride", "2")
    page.dispatch_event("#conv-stride", "change")
    got = wait_numbers(page, "#conv-figure", "n.stride[0] === 2")
    assert got["output_shape"] == [14, 14] and "Output size: 14×14" in page.text_content("#conv-size")
    box = page.locator("#grid").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 9.5 / 14, box["y"] + box["height"] * 4.5 / 14)  # row 4, column 9
    got = wait_numbers(page, "#conv-figure", "n.position[0] === 4 && n.position[1] === 9")
    conv1 = state.handle.model.conv1
    with torch.no_grad():
        ref = F.conv2d(_x(state, 0).double(), conv1.weight.double(), conv1.bias.double(), stride=2,
                       padding=conv1.padding)[0, 0]
    assert got["total"] == pytest.approx(float(ref[4, 9]), abs=1e-9)
    assert page.text_content("#conv-sum").endswith(f"= {float(ref[4, 9]):.4f}")
    page.screenshot(path=str(shots / "app-conv.png"), full_page=True)


def test_axe_reports_no_violation_on_any_app_page(page: Any, server: str, shots: Path) -> None:
    found = {}
    for url in ("/", "/conv", "/results"):
        page.goto(server + url)
        settled(page)
        found[url] = axe(page)
    page.screenshot(path=str(shots / "app-results.png"))
    assert found == {"/": [], "/conv": [], "/results": []}


def test_report_opens_from_file_url_with_no_request_and_no_axe_violation(page: Any, state: Any, tmp_path: Path,
                                                                           shots: Path) -> None:
    from convlens.report import build_report

    path = tmp_path / "report.html"
    path.write_text(build_report(state.handle, methods=("gradcam",), digits=(7,), data_dir=None), encoding="utf-8")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    assert page.title() == "convlens report: seed-cnn"
    broken = page.evaluate("() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
    assert broken == 0 and page.evaluate("() => document.images.length") >= 8
    assert all(u.startswith(("file:", "data:")) for u in requests), [u[:60] for u in requests]
    page.screenshot(path=str(shots / "report.png"))
    assert axe(page) == []
