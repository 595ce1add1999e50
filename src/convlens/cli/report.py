"""``convlens report``: one self-contained HTML file about a run."""

from __future__ import annotations

from pathlib import Path

import click

from convlens.cli._app import app
from convlens.cli._common import LabelType, console, data_dir_option, force_option


@app.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--compare", "compare", type=click.Path(path_type=Path), default=None, metavar="RUN_B",
              help="Also compare with this run (CKA, matched filters, disagreements).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("report.html"), show_default=True,
              help="The HTML file to write.")
@click.option("--digit", "digits", type=LabelType(), multiple=True,
              help="Show the first test example of this class (repeatable) [default: 7].")
@click.option("--methods", default="gradcam,scorecam,saliency", show_default=True, metavar="M1,M2,...",
              help="Heatmap methods of the CAM gallery.")
@data_dir_option
@force_option
def report(run: Path, compare: Path | None, out: Path, digits: tuple[int | str, ...], methods: str,
           data_dir: Path | None, force: bool) -> None:
    """Write one self-contained HTML report of RUN: model card, the convolution worked out,
    filters, feature maps, CAMs with faithfulness, and a comparison with --compare.

    Images are inlined, nothing is fetched from the network, it opens from file:// and
    prints; the same inputs give the same bytes.
    """
    from convlens.models.run import load_run
    from convlens.report import check_report_out, write_report

    check_report_out(out, overwrite=force)  # before the work
    names = [m.strip() for m in methods.split(",") if m.strip()]
    path = write_report(load_run(run), out, overwrite=force, compare=load_run(compare) if compare else None,
                        data_dir=data_dir, digits=digits or (7,), methods=names)
    console().print(f"report: [bold]{path}[/] ({path.stat().st_size / 1e6:.1f} MB)")
