"""``convlens serve``: the local web app (needs the ``app`` extra: FastAPI and uvicorn)."""

from __future__ import annotations

from pathlib import Path

import click

from convlens.cli._app import app
from convlens.cli._common import data_dir_option, device_option, model_source, open_source

#: Addresses that only this machine can reach.
LOCAL = ("127.0.0.1", "localhost", "::1")


@app.command()
@model_source
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but 127.0.0.1/localhost exposes the app (and the model) to "
                   "your network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@data_dir_option
@device_option
def serve(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
          host: str, port: int, data_dir: Path | None, device: str) -> None:
    """Open a local web app on RUN (or --model): draw or choose a digit, see the prediction,
    feature maps of any layer, filters, CAMs with faithfulness, the first convolution worked out."""
    from convlens.errors import ConfigError

    try:
        import uvicorn

        from convlens.app import AppState, create_app
    except ImportError as exc:
        raise ConfigError(f"the web app needs FastAPI and uvicorn ({exc.name} is missing): "
                          "pip install 'convlens[app]'") from None
    if host not in LOCAL:
        click.echo(f"convlens: warning: --host {host} exposes the app to every machine that can reach this one; "
                   "it has no login. Use 127.0.0.1 unless you mean it.", err=True)
    h = open_source(run, spec, weights, dataset, input_shape, device)
    state = AppState.from_handle(h, data_dir=data_dir)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"convlens: serving {h.name} at http://{shown}:{port}/ (Ctrl-C stops)", err=True)
    uvicorn.run(create_app(state), host=host, port=port, log_level="warning")
