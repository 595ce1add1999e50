"""The web app's API (FastAPI's TestClient): every number equals the library's, or an
independent computation with the model's own modules; wrong names are HTTP 400 with one
line; uploads are bounded; no request parameter reaches a file path; nothing is unpickled."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("fastapi", reason="the web app needs the app extra (fastapi)")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient

from _helpers import mnist_full, small_run, untrained_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_run(tmp_path_factory).run.path


@pytest.fixture(scope="module")
def state(run_dir: Path):  # type: ignore[no-untyped-def]
    from convlens.app import AppState
    from convlens.models.handle import open_model

    return AppState.from_handle(open_model(run_dir), data=mnist_full()[1])


@pytest.fixture(scope="module")
def client(state) -> TestClient:  # type: ignore[no-untyped-def]
    from convlens.app import create_app

    return TestClient(create_app(state))


def _x(state, index: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    ds = state.data
    return ds.normalise(ds.images[index: index + 1])


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_predict_equals_the_models_softmax(client: TestClient, state) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/api/predict", params={"input": "index:5"}).json()
    with torch.no_grad():
        probs = state.handle.model(_x(state, 5)).softmax(1)[0].double()
    np.testing.assert_allclose(body["probabilities"], probs.numpy(), rtol=1e-6, atol=1e-7)
    assert [t["class"] for t in body["top"]] == torch.argsort(probs, descending=True)[:5].tolist()
    assert body["true_class"] == int(state.data.labels[5])


def test_digit_input_is_the_nth_example_of_that_class(client: TestClient, state) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/api/predict", params={"input": "digit:3:2"}).json()
    third = int(np.flatnonzero(state.data.labels.numpy() == 3)[2])
    assert body["label"].endswith(f"(index {third})") and body["true_class"] == 3


def test_maps_of_conv2_after_relu_equal_the_modules_own_forward(client: TestClient, state) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/api/maps", params={"input": "index:2", "layer": "relu2", "stage": "conv",
                                           "format": "json"}).json()
    m = state.handle.model
    with torch.no_grad():
        a = m.relu2(m.conv2(m.pool1(m.relu1(m.conv1(_x(state, 2))))))[0]
    np.testing.assert_allclose(body["maxima"], a.amax(dim=(1, 2)).numpy(), rtol=1e-5, atol=1e-6)
    assert body["alt"] and body["caption"]


def test_cam_heat_equals_the_library_and_scores_are_reported(client: TestClient, state) -> None:  # type: ignore[no-untyped-def]
    import convlens

    for method in ("gradcam", "saliency"):
        body = client.get("/api/cam", params={"input": "index:4", "method": method, "format": "json"}).json()
        r = convlens.cam(state.handle.model, _x(state, 4), method=method)
        np.testing.assert_allclose(body["heat"], r.normalised[0].double().numpy(), atol=1e-6)
        assert body["target"] == int(r.target[0])
        assert 0 <= body["scores"]["deletion_auc"] <= 1 and 0 <= body["scores"]["insertion_auc"] <= 1
        assert body["caption"] and body["alt"]


def test_conv_explainer_equals_torch_conv2d_and_reports_the_output_size(client: TestClient, state) -> None:  # type: ignore[no-untyped-def]
    conv1 = state.handle.model.conv1
    for stride, padding, dilation, at in ((1, None, None, (20, 16)), (2, 1, 1, (3, 4)), (3, 0, 2, (5, 1))):
        params = {"input": "index:0", "channel": 3, "row": at[0], "col": at[1], "stride": stride, "dilation": dilation,
                  "padding": padding}
        body = client.get("/api/conv", params={k: v for k, v in params.items() if v is not None}).json()
        p = conv1.padding[0] if padding is None else padding
        with torch.no_grad():
            ref = F.conv2d(_x(state, 0).double(), conv1.weight.double(), conv1.bias.double(), stride=stride,
                           padding=p, dilation=dilation or 1)[0, 3]
        assert body["output_shape"] == list(ref.shape)
        assert body["total"] == pytest.approx(float(ref[at]), abs=1e-9)
        assert body["sum"] + body["bias"] == pytest.approx(body["total"], abs=1e-12)
        np.testing.assert_allclose(np.asarray(body["products"]),
                                   np.asarray(body["patch"]) * np.asarray(body["kernel"]), atol=1e-12)


def test_figures_come_as_png_svg_and_alt_text(client: TestClient) -> None:
    png = client.get("/api/filters", params={"layer": "conv2", "format": "png"})
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    svg = client.get("/api/cam", params={"method": "gradcam", "format": "svg", "download": "true"})
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content[:500]
    assert svg.headers["content-disposition"] == 'attachment; filename="cam-gradcam.svg"'
    txt = client.get("/api/maps", params={"layer": "conv1", "format": "txt"}).text
    words = client.get("/api/maps", params={"layer": "conv1", "format": "json"}).json()
    assert words["alt"] in txt and words["caption"] in txt


@pytest.mark.parametrize(("url", "params", "words"), [
    ("/api/maps", {"layer": "conv9"}, "unknown layer 'conv9'"),
    ("/api/filters", {"layer": "relu1"}, "unknown conv layer 'relu1'"),
    ("/api/cam", {"method": "gradcan"}, "unknown explanation method 'gradcan'"),
    ("/api/cam", {"method": "gradcam", "layer": "fc"}, "unknown layer 'fc'"),
    ("/api/predict", {"input": "digit:11"}, "unknown class '11'"),
    ("/api/predict", {"input": "index:99999"}, "the test split has examples 0..1499"),
    ("/api/predict", {"input": "../../etc/passwd"}, "use index:N, digit:CLASS[:NTH] or upload:ID"),
    ("/api/predict", {"input": "upload:../../etc/passwd"}, "no uploaded image"),
    ("/api/maps", {"stage": "softmax"}, "parameter 'stage'"),
    ("/api/conv", {"stride": 9}, "parameter 'stride'"),
    ("/api/conv", {"channel": 16}, "conv1 has channels 0..15"),
    ("/api/conv", {"row": 40, "col": 0}, "outside the 28×28 output"),
    ("/api/results/compare/0", {}, "unknown computed result 'compare'"),
])
def test_wrong_names_are_400_with_one_line(client: TestClient, url: str, params: dict, words: str) -> None:
    r = client.get(url, params=params)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert words in detail and "\n" not in detail


def test_no_request_reaches_a_file_path(client: TestClient) -> None:
    for url in ("/static/..%2Fstate.py", "/static/state.py", "/static/%2e%2e/server.py", "/static/../../pyproject.toml"):
        r = client.get(url)
        assert r.status_code in (400, 404) and b"import" not in r.content


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG header declaring width×height pixels with a tiny (incomplete) image stream."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


def test_upload_predicts_like_the_library_on_the_same_file(client: TestClient, state, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from convlens import views

    data = _png(state.data.images[7, 0].numpy())
    up = client.post("/api/upload", content=data).json()
    assert up["input"].startswith("upload:") and up["label"] == "uploaded image"
    body = client.get("/api/predict", params={"input": up["input"]}).json()
    (tmp_path / "digit.png").write_bytes(data)
    ref = views.predict(state.handle, views.choose_input(state.handle, image=tmp_path / "digit.png"))
    np.testing.assert_allclose(body["probabilities"], ref.probabilities, rtol=1e-6, atol=1e-7)


def test_uploads_are_bounded_in_bytes_and_pixels(client: TestClient, state) -> None:  # type: ignore[no-untyped-def]
    bomb = client.post("/api/upload", content=_bomb_png(20_000, 20_000))  # Pillow's own guard refuses it
    assert bomb.status_code == 400
    assert bomb.json()["detail"].startswith("the uploaded image is larger than the 89,478,485 pixels convlens reads")
    over = client.post("/api/upload", content=_bomb_png(10_000, 9_000))  # convlens's check, before decoding
    assert over.json()["detail"].startswith("the uploaded image is 10000×9000 pixels (90,000,000), more than")
    assert client.post("/api/upload", content=b"not an image").json()["detail"] == (
        "the uploaded image is not an image file Pillow can read (PNG, JPEG, BMP, ...)")
    assert "empty" in client.post("/api/upload", content=b"").json()["detail"]
    big = client.post("/api/upload", content=b"\0" * (state.max_upload_bytes + 1))
    assert big.status_code == 400 and "more than the 2,097,152 the app reads" in big.json()["detail"]


def test_saved_results_are_listed_and_served(tmp_path: Path, state) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from convlens.app import create_app
    from convlens.viz.figure import save

    run = tmp_path / "run"
    fig = __import__("convlens").views.filters(state.handle, "conv1")
    save(fig, run / "compare", "cka")
    (run / "compare" / "compare.json").write_text(json.dumps({"split": "test", "figures": {
        "cka": {"caption": fig.caption, "alt": fig.alt}, "missing": {"caption": "x", "alt": "y"}}}))
    c = TestClient(create_app(dataclasses.replace(state, results_dir=run)))
    found = c.get("/api/results").json()
    assert [r["key"] for r in found] == ["compare"]
    assert [f["stem"] for f in found[0]["figures"]] == ["cka"] and ["split", "test"] in found[0]["numbers"]
    assert c.get("/api/results/compare/0").content == (run / "compare" / "cka.png").read_bytes()
    assert c.get("/api/results/compare/1").status_code == 400
    assert c.get("/api/info").json()["results"] == ["compare"]


def test_two_apps_serve_their_own_models(tmp_path: Path, state, mnist_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from convlens.app import AppState, create_app
    from convlens.models.handle import open_model

    other = AppState.from_handle(open_model(untrained_run(tmp_path / "u", mnist_dir)), data=state.data)
    a, b = TestClient(create_app(state)), TestClient(create_app(other))
    pa = a.get("/api/predict", params={"input": "index:1"}).json()["probabilities"]
    pb = b.get("/api/predict", params={"input": "index:1"}).json()["probabilities"]
    with torch.no_grad():
        ref = other.handle.model(_x(state, 1)).softmax(1)[0].double().numpy()
    np.testing.assert_allclose(pb, ref, rtol=1e-6, atol=1e-7)
    assert not np.allclose(pa, pb)


def test_nothing_is_unpickled(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("something was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    from convlens.app import AppState, create_app
    from convlens.models.handle import open_model

    c = TestClient(create_app(AppState.from_handle(open_model(run_dir), data=mnist_full()[1])))
    for url in ("/", "/api/info", "/api/predict", "/api/cam?format=json", "/api/conv", "/api/maps?format=png"):
        assert c.get(url).status_code == 200, url


def test_pages_and_assets_are_served_locally(client: TestClient) -> None:
    import re

    for url in ("/", "/conv", "/results"):
        r = client.get(url)
        assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]
        refs = re.findall(r'(?:src|href)="([^"]*)"', r.text)
        assert refs and all(u.startswith(("/", "#", "data:")) for u in refs), refs
        for u in refs:
            if u.startswith("/static/"):
                assert client.get(u).status_code == 200
    js = client.get("/static/app.js").text
    assert "http://" not in js and "https://" not in js


def test_serve_binds_127_0_0_1_and_warns_when_exposed(run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], mnist_dir: Path) -> None:
    import uvicorn

    from _helpers import cli_call

    seen: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.append(kw))
    code, _, err = cli_call(capsys, "serve", str(run_dir), "--data-dir", str(mnist_dir))
    assert code == 0 and seen[-1]["host"] == "127.0.0.1" and seen[-1]["port"] == 8000 and "warning" not in err
    code, _, err = cli_call(capsys, "serve", str(run_dir), "--data-dir", str(mnist_dir), "--host", "0.0.0.0",
                            "--port", "8123")
    assert code == 0 and seen[-1]["host"] == "0.0.0.0" and seen[-1]["port"] == 8123
    assert "warning: --host 0.0.0.0 exposes the app" in err


def test_a_users_rgb_model_with_nested_names(mnist_dir: Path) -> None:
    """--model: any nn.Module (3 channels, layers named by nesting), the data fitted to it."""
    import warnings

    import convlens
    from convlens.app import AppState, create_app
    from convlens.errors import ConvlensNote
    from convlens.models.handle import open_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvlensNote)
        torch.manual_seed(0)
        h = open_model(spec="torch.nn:Sequential", input_shape="3,16,16", mean="0.5", std="0.25")
    h.model.add_module("features", torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()))
    h.model.add_module("pool", torch.nn.AdaptiveAvgPool2d(1))
    h.model.add_module("flat", torch.nn.Flatten())
    h.model.add_module("head", torch.nn.Linear(4, 10))
    state = AppState.from_handle(h, data_dir=mnist_dir)
    c = TestClient(create_app(state))
    info = c.get("/api/info").json()
    assert info["layers"] == ["features", "features.0", "features.1"] and info["first_conv"] == "features.0"
    assert info["input_shape"] == [3, 16, 16] and info["results"] == []
    body = c.get("/api/cam", params={"input": "index:0", "method": "gradcam", "layer": "features.1",
                                     "format": "json"}).json()
    x = state.chosen("index:0").x
    assert tuple(x.shape) == (1, 3, 16, 16)
    ref = convlens.cam(h.model, x, method="gradcam", layer="features.1")
    np.testing.assert_allclose(body["heat"], ref.normalised[0].double().numpy(), atol=1e-6)
    conv = c.get("/api/conv", params={"input": "index:0", "channel": 1, "row": 3, "col": 5}).json()
    with torch.no_grad():
        out = F.conv2d(x.double(), h.model.features[0].weight.double(), h.model.features[0].bias.double(), padding=1)
    assert len(conv["patch"]) == 3 and conv["total"] == pytest.approx(float(out[0, 1, 3, 5]), abs=1e-9)


def test_concurrent_cam_requests_each_get_their_own_numbers(client: TestClient, state) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    import convlens

    def heat(i: int) -> list[list[float]]:
        r = client.get("/api/cam", params={"input": f"index:{i}", "method": "gradcam", "format": "json",
                                           "scores": "false", "words": "false"})
        assert r.status_code == 200, r.text
        return r.json()["heat"]

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(heat, range(12)))
    for i, h in enumerate(got):
        ref = convlens.cam(state.handle.model, _x(state, i), method="gradcam").normalised[0].double().numpy()
        np.testing.assert_allclose(h, ref, atol=1e-6)
