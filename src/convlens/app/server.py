"""Routes of the web app. Parsing and serialising only: the numbers come from
:mod:`convlens.views` and the library.

Every name a request gives (layer, method, class, stage, result) is checked against the
model's own lists; a wrong one is HTTP 400 with a one-line reason. No request parameter
reaches a file path: pages and assets come from a fixed table of package data, uploads
live in memory under their hash, and computed results are listed from the run directory
by convlens itself.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from convlens.app.state import AppState
from convlens.errors import ConfigError, ConvlensError

if TYPE_CHECKING:
    from convlens.viz.figure import Explained

Format = Literal["png", "svg", "json", "txt"]
Stage = Literal["conv", "relu", "pool"]

#: URL -> (package file, media type): the only files the app serves.
PAGES = {"/": "index.html", "/conv": "conv.html", "/results": "results.html"}
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _static(name: str) -> bytes:
    return (resources.files("convlens.app") / "static" / name).read_bytes()


def _one_line(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    e = errors[0]
    where = ".".join(str(p) for p in e.get("loc", ())[1:]) or "request"
    return f"parameter {where!r}: {e.get('msg', 'invalid')}"


def _figure(fig: Explained, fmt: Format, stem: str, download: bool, numbers: dict[str, Any] | None = None) -> Response:
    headers = {}
    if download:
        ext = "txt" if fmt == "txt" else fmt
        headers["Content-Disposition"] = f'attachment; filename="{stem}.{ext}"'
    if fmt == "png":
        return Response(fig.png_bytes(dpi=100), media_type="image/png", headers=headers)
    if fmt == "svg":
        return Response(fig.svg_bytes(), media_type="image/svg+xml", headers=headers)
    if fmt == "txt":
        text = f"{fig.title}\n\n{fig.caption}\n\nText description: {fig.alt}\n"
        return Response(text, media_type="text/plain; charset=utf-8", headers=headers)
    return JSONResponse({"title": fig.title, "caption": fig.caption, "alt": fig.alt, **(numbers or {})},
                        headers=headers)


def build(state: AppState) -> FastAPI:
    """The application for ``state`` (what :func:`convlens.app.create_app` returns)."""
    from convlens import views
    from convlens.viz.figure import figure_stem

    app = FastAPI(title="convlens", docs_url=None, redoc_url=None, openapi_url=None)  # the docs UI loads a CDN
    h = state.handle

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(ConvlensError)
    async def user_error(request: Request, exc: ConvlensError) -> JSONResponse:
        return JSONResponse({"detail": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=400)

    for url, name in PAGES.items():
        def page(name: str = name) -> Response:
            return Response(_static(name), media_type="text/html; charset=utf-8")

        app.add_api_route(url, page, methods=["GET"], include_in_schema=False)

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in ASSETS:
            raise ConfigError(f"no asset {name!r}")
        return Response(_static(name), media_type=ASSETS[name])

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        from convlens.explain import METHODS

        first = views.first_conv(h)
        return {
            "model": h.name, "run": h.path.name if h.path is not None else None,
            "input_shape": list(h.input_shape), "classes": list(state.data.classes), "test_size": len(state.data),
            "layers": state.layers, "convs": state.convs, "first_conv": first,
            "first_conv_channels": int(getattr(h.model.get_submodule(first), "out_channels", 0)),
            "stages": ["conv", "relu", "pool"],
            "methods": [{"name": n, "title": METHODS[n].title, "needs_layer": METHODS[n].needs_layer}
                        for n in state.methods],
            "max_upload_bytes": state.max_upload_bytes,
            "results": [r.key for r in views.saved_results(state.results_dir)] if state.results_dir else [],
        }

    @app.get("/api/predict")
    def predict(input: str = "index:0", k: int = Query(5, ge=1, le=100)) -> dict[str, Any]:
        chosen = state.chosen(input)
        p = views.predict(h, chosen, k=k)
        return {"input": input, "label": chosen.label, "true_class": chosen.true_class,
                "top": [{"class": c, "name": n, "p": q} for c, n, q in p.top], "probabilities": list(p.probabilities)}

    @app.get("/api/maps")
    def maps(input: str = "index:0", layer: str | None = None, stage: Stage = "conv", format: Format = "png",
             download: bool = False) -> Response:
        name = state.layer(layer)
        fig = views.maps(h, state.chosen(input), name, stage=stage)
        maxima = [float(v) for v in fig.data["maxima"]]
        return _figure(fig, format, figure_stem("maps", name, stage), download,
                       {"layer": name, "stage": stage, "maxima": maxima})

    @app.get("/api/filters")
    def filters(layer: str | None = None, format: Format = "png", download: bool = False) -> Response:
        name = state.layer(layer, convs=True)
        fig = views.filters(h, name, max_filters=64)
        return _figure(fig, format, figure_stem("filters", name), download,
                       {"layer": name, "shape": list(fig.data["weights"].shape)})

    @app.get("/api/cam")
    def cam(input: str = "index:0", method: str = "gradcam", layer: str | None = None, format: Format = "png",
            scores: bool = True, words: bool = True, download: bool = False) -> Response:
        """A heatmap: drawn (png, svg, txt), or its numbers (json: the library's normalised map,
        target and probability; with ``scores`` its faithfulness, with ``words`` the caption and alt text)."""
        name = state.method(method)
        from convlens.explain import METHODS

        at = state.layer(layer) if layer and METHODS[name].needs_layer else None
        chosen = state.chosen(input)
        stem = figure_stem("cam", name, at)
        if format != "json":
            return _figure(views.cam_view(h, chosen, method=name, layer=at), format, stem, download)
        r = views.explanation(h, chosen, method=name, layer=at)
        body: dict[str, Any] = {"method": name, "title": r.title, "layers": list(r.layers),
                                "target": int(r.target[0]), "probability": float(r.target_probability[0]),
                                "heat": r.normalised[0].detach().cpu().double().tolist()}
        if scores:
            body["scores"] = views.cam_scores(h, chosen, method=name, layer=at)
        if words:
            fig = views.cam_view(h, chosen, method=name, layer=at)
            body.update(caption=fig.caption, alt=fig.alt)
        return JSONResponse(body)

    @app.get("/api/conv")
    def conv(input: str = "index:0", channel: int = Query(0, ge=0), row: int | None = Query(None, ge=0),
             col: int | None = Query(None, ge=0), stride: int | None = Query(None, ge=1, le=8),
             padding: int | None = Query(None, ge=0, le=8), dilation: int | None = Query(None, ge=1, le=4),
             format: Format = "json", download: bool = False) -> Response:
        first = views.first_conv(h)
        if (row is None) != (col is None):
            raise ConfigError("give both row and col of the output position, or neither")
        at = (row, col) if row is not None and col is not None else None
        step = views.conv_step(h, state.chosen(input), channel=channel, position=at, stride=stride,
                               padding=padding, dilation=dilation)
        numbers = {**step.to_dict(), "output": step.trace.output.tolist()}
        return _figure(step.figure, format, figure_stem("conv-explain", f"{first}-{channel}"), download, numbers)

    @app.get("/api/results")
    def results() -> list[dict[str, Any]]:
        found = views.saved_results(state.results_dir) if state.results_dir else []
        return [{"key": r.key, "title": r.title, "numbers": [list(n) for n in r.numbers],
                 "figures": [{"n": i, "stem": f.stem, "caption": f.caption, "alt": f.alt}
                             for i, f in enumerate(r.figures)]} for r in found]

    @app.get("/api/results/{key}/{n}")
    def result_figure(key: str, n: int, format: Literal["png", "txt"] = "png", download: bool = False) -> Response:
        found = {r.key: r for r in views.saved_results(state.results_dir)} if state.results_dir else {}
        if key not in found:
            from convlens.errors import unknown_name

            raise ConfigError(unknown_name("computed result", key, list(found)))
        figs = found[key].figures
        if not 0 <= n < len(figs):
            raise ConfigError(f"{key} has figures 0..{len(figs) - 1}")
        f = figs[n]
        headers = {"Content-Disposition": f'attachment; filename="{f.stem}.{format}"'} if download else {}
        if format == "txt":
            return Response(f"{f.caption}\n\nText description: {f.alt}\n", media_type="text/plain; charset=utf-8",
                            headers=headers)
        return Response(f.png.read_bytes(), media_type="image/png", headers=headers)

    @app.post("/api/upload")
    async def upload(request: Request, name: str = "uploaded image") -> dict[str, Any]:
        limit = state.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ConfigError(f"the upload is {int(declared):,} bytes, more than the {limit:,} the app reads; "
                              "send a smaller image")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ConfigError(f"the upload is larger than the {limit:,} bytes the app reads; send a smaller image")
        if not body:
            raise ConfigError("the upload is empty: send the image file's bytes as the request body")
        label = "drawn digit" if name == "drawing" else "uploaded image"
        key, chosen = await run_in_threadpool(state.add_upload, bytes(body), label)
        return {"input": f"upload:{key}", "label": chosen.label}

    return app
