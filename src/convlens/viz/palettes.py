"""Colour-blind-safe palettes.

* ``diverging`` (signed data centred on zero, e.g. weights): ColorBrewer ``RdBu_r``,
  which ColorBrewer marks as colour-blind safe; zero is white.
* ``sequential`` (activations, heatmaps): ``viridis``, perceptually uniform and
  readable with every common colour-vision deficiency and in grayscale print.
* ``gray``: grayscale for both kinds, on request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PaletteName = Literal["default", "gray"]


@dataclass(frozen=True)
class Palette:
    diverging: str
    sequential: str
    image: str = "gray"  # how input images are drawn
    name: str = "default"


_PALETTES = {
    "default": Palette(diverging="RdBu_r", sequential="viridis", name="default"),
    "gray": Palette(diverging="gray", sequential="gray", name="gray"),
}


def palette(name: str = "default") -> Palette:
    """Return the palette called ``name`` (``"default"`` or ``"gray"``)."""
    from convlens.errors import ConfigError, unknown_name

    try:
        return _PALETTES[name]
    except KeyError:
        raise ConfigError(unknown_name("palette", name, _PALETTES)) from None


OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
"""Okabe–Ito qualitative colours (distinguishable with every common colour-vision deficiency)."""
