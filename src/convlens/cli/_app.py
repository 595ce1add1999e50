"""The root click group. Command modules attach their commands to ``app``."""

from __future__ import annotations

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="convlens", prog_name="convlens")
def app() -> None:
    """convlens: see what a convolutional neural network learned.

    Start with `convlens demo`: it trains the seed CNN on MNIST and writes its
    filters, feature maps and an index.html into ./convlens-demo.
    Set CONVLENS_DEBUG=1 to see full tracebacks.
    """
