"""Figures: palettes, figure builders, captions and alt texts.

Every builder returns a :class:`~convlens.viz.figure.Explained` figure: a matplotlib
``Figure`` built without pyplot's global state, plus a caption and an alt text
generated from the data it shows. :func:`~convlens.viz.figure.save` writes it as PNG
and SVG with a JSON sidecar.
"""

from convlens.viz.figure import Explained, save
from convlens.viz.palettes import Palette, palette

__all__ = ["Explained", "Palette", "palette", "save"]
