"""Take the screenshots of docs/app.md and README.md with Playwright and Debian's Chromium.

    CONVLENS_DATA_DIR=../shared/data/mnist-9k python docs/screenshots.py RUN REPORT.html

Serves RUN with the app on 127.0.0.1, draws a digit, switches views, opens REPORT.html
from file://, and writes small PNGs (a 256-colour palette) into docs/images/.
"""

from __future__ import annotations

import io
import itertools
import sys
import threading
import time
from pathlib import Path

import uvicorn
from PIL import Image
from playwright.sync_api import sync_playwright

from convlens.app import AppState, create_app
from convlens.models.handle import open_model

OUT = Path(__file__).resolve().parent / "images"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
READY = """() => document.querySelectorAll('[data-ready="0"]').length === 0
    && !/Working|Uploading/.test((document.getElementById('status') || {}).textContent || '')"""


def save(png: bytes, name: str, width: int = 900) -> None:
    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    img.quantize(256).save(OUT / name, optimize=True)
    print(f"{OUT / name}: {img.width}×{img.height}, {(OUT / name).stat().st_size // 1024} kB")


def main(run: str, report: str) -> None:
    state = AppState.from_handle(open_model(run))
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900}, bypass_csp=True)
        page.set_default_timeout(120_000)
        page.goto(base + "/")
        page.wait_for_function(READY)
        box = page.locator("#pad").bounding_box()
        x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
        stroke = [(0.3, 0.25), (0.5, 0.15), (0.7, 0.25), (0.65, 0.45), (0.35, 0.8), (0.3, 0.85), (0.75, 0.85)]  # a 2
        page.mouse.move(x0 + stroke[0][0] * w, y0 + stroke[0][1] * h)
        page.mouse.down()
        for (ax, ay), (bx, by) in itertools.pairwise(stroke):
            for t in (0.25, 0.5, 0.75, 1.0):
                page.mouse.move(x0 + (ax + t * (bx - ax)) * w, y0 + (ay + t * (by - ay)) * h)
        page.mouse.up()
        page.click("#use-drawing")
        page.wait_for_function("() => (document.getElementById('prediction').dataset.numbers || '').includes('upload:')")
        page.wait_for_function(READY)
        page.select_option("#maps-layer", "conv2")
        page.select_option("#maps-stage", "relu")
        page.wait_for_function(READY)
        save(page.screenshot(clip={"x": 0, "y": 0, "width": 1200, "height": 900}), "app-input.png")
        save(page.locator("#maps-figure").screenshot(), "app-maps.png")
        page.select_option("#cam-method", "gradcam++")
        page.wait_for_timeout(300)
        page.wait_for_function(READY)
        cam = page.locator("section:has(#cam-figure)")
        save(cam.screenshot(), "app-cam.png")
        page.goto(base + "/conv")
        page.wait_for_function(READY)
        page.fill("#conv-stride", "2")
        page.dispatch_event("#conv-stride", "change")
        page.wait_for_timeout(300)
        page.wait_for_function(READY)
        save(page.locator("section:has(#conv-figure)").screenshot(), "app-conv.png")
        page.goto(base + "/results")
        page.wait_for_function("() => document.querySelectorAll('#results img').length === 0 || "
                               "[...document.querySelectorAll('#results img')].every(i => i.complete)")
        save(page.screenshot(full_page=False), "app-results.png")
        page.goto(Path(report).resolve().as_uri())
        page.wait_for_load_state("load")
        save(page.screenshot(clip={"x": 0, "y": 0, "width": 1200, "height": 900}), "report-top.png")
        page.locator("#convolution").scroll_into_view_if_needed()
        save(page.locator("#convolution figure").screenshot(), "report-convolution.png")
        save(page.locator("#cams table").screenshot(), "report-faithfulness.png")
        page.emulate_media(media="print")
        save(page.screenshot(clip={"x": 0, "y": 0, "width": 1200, "height": 900}), "report-print.png")
        browser.close()
    server.should_exit = True


if __name__ == "__main__":
    main(*sys.argv[1:3])
