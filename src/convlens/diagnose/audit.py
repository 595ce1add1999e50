"""Does the model look at the object or at its surroundings? The background and colour audit.

:func:`audit` answers with four kinds of evidence, each on the images of one dataset:

1. **Variants** (:mod:`convlens.diagnose._variants`): accuracy on the original images, on
   their foreground only, their background only, and on each foreground pasted onto the
   background of another image of the same class (``mixed-same``) or of any image
   (``mixed-rand``), as in the Backgrounds Challenge (Xiao et al., ICLR 2021).
   ``bg_gap = acc(mixed-same) − acc(mixed-rand)``: how much a wrong background costs.
   For 3-channel data also ``grayscale`` and the three channel swaps.
2. **Attribution mass**: the fraction of the positive Grad-CAM mass (``method``, any CAM of
   :data:`convlens.explain.METHODS`) and of the input-gradient (saliency) mass that falls on
   the background, for the predicted class of each original image: the maps' positive
   values summed over the background of all images, divided by their sum over all images
   (overall, and per true class). Summing, not averaging per-image shares, keeps images
   whose map has no positive value from being dropped silently: they add nothing, and
   :attr:`Audit.cam_empty` counts them.
3. **Feature maps**: for every channel of the last conv layers (``channel_layers``, default
   the last two ``nn.Conv2d``), the share of its activation energy that lies on the
   background. The energy of channel ``c`` at a cell is ``(a_c(x) − a_c(blank))²``, its
   response's change from its response to an empty image (all ``fill``), so a channel that
   is merely constant (its bias) carries none; the mask is downsampled to the map by area
   averaging (cell weight on the background = 1 − its foreground fraction). A channel is
   *background-driven* when more than :data:`CHANNEL_SHARE` (half) of its energy lies on the
   background and more than the background's share of the map's area (it prefers the
   background).
4. **Verdict** (:attr:`Audit.biased`, :attr:`Audit.reasons`) in plain words, by these rules
   (``chance = 1 / classes``):

   * background: ``bg_gap ≥`` :data:`BG_GAP_LIMIT` (10 pp; a ResNet-50 on ImageNet-9 has
     7.3 pp), or only-background accuracy above chance by at least :data:`ONLY_BG_LIMIT` (half)
     of the way from chance to 100% (55% for ten classes) together with at least
     :data:`MASS_LIMIT` (half) of the CAM mass on the background;
   * colour (3 channels): a colour variant moves accuracy by at least :data:`COLOUR_LIMIT`
     (25 pp) and one of the two accuracies is below chance: the model reads colour, and the
     reason names the swap and which colour each class is predicted for.

Foreground masks come from the user (``masks``: a boolean ``N×H×W`` array or a ``.npy``
file), else they are derived for dark-background data by
:func:`convlens.data.masks.foreground_masks` (brightest channel above 32 of 255, dilated
by 2 pixels). The model is left as it came (``training`` flags, ``requires_grad``,
gradients, hooks): it is run in eval mode, through :mod:`convlens.inspect.capture` and
:mod:`convlens.explain` only.

>>> report = audit(model, test)                                       # doctest: +SKIP
>>> report.biased, report.reasons[0]                                  # doctest: +SKIP
(True, '100% accuracy on only-background images (chance 10%)')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convlens.data.dataset import ImageDataset
from convlens.data.masks import DILATION, THRESHOLD, foreground_masks
from convlens.diagnose._variants import (
    BACKGROUND_VARIANTS,
    CHANNEL_NAMES,
    COLOUR_VARIANTS,
    partners,
    variant_batch,
)
from convlens.errors import ConfigError, DataError, positive_int

__all__ = [
    "BG_GAP_LIMIT",
    "CHANNEL_SHARE",
    "COLOUR_LIMIT",
    "MASS_LIMIT",
    "ONLY_BG_LIMIT",
    "Audit",
    "ChannelCheck",
    "audit",
    "conv_layers",
    "load_masks",
]

BG_GAP_LIMIT = 0.10
ONLY_BG_LIMIT = 0.5
MASS_LIMIT = 0.5
CHANNEL_SHARE = 0.5
COLOUR_LIMIT = 0.25


@dataclass
class ChannelCheck:
    """The feature-map check of one layer: ``shares[c]`` is channel ``c``'s share of its
    activation energy on the background, ``area`` the background's share of the map's area,
    ``driven`` the background-driven channels (most background first)."""

    layer: str
    shares: np.ndarray
    area: float
    driven: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "area": self.area, "shares": [float(s) for s in self.shares],
                "background_driven": self.driven}


@dataclass
class Audit:
    """What :func:`audit` found (see the module docstring for every number's definition).

    Attributes:
        variants: variant name -> accuracy (0..1).
        bg_gap: ``variants["mixed-same"] − variants["mixed-rand"]``.
        background_mass: the share of the positive CAM mass, summed over all images, that lies
            on the background; ``_per_class`` summed over each true class's images (NaN where
            there is none). ``gradient_mass`` likewise for the input gradient. ``cam_empty``
            counts the images whose CAM has no positive value at all (Grad-CAM's channel
            weights can make the whole map negative): they add no mass.
        channels: one :class:`ChannelCheck` per layer checked.
        colour: for 3-channel data, the colour check (``None`` otherwise).
        biased, reasons, verdict: the verdict; ``reasons`` are the signs that held (or, when
            none did, the numbers that were checked).
        examples: indices of the images shown in the variants figure; ``example_images``
            variant name -> their uint8 ``(k, C, H, W)`` pixels.
    """

    n: int
    classes: tuple[str, ...]
    variants: dict[str, float]
    bg_gap: float
    method: str
    layer: str
    background_mass: float
    background_mass_per_class: np.ndarray
    gradient_mass: float
    gradient_mass_per_class: np.ndarray
    channels: list[ChannelCheck]
    colour: dict[str, Any] | None
    biased: bool
    reasons: list[str]
    verdict: str
    masks_from: str
    foreground_fraction: float
    seed: int
    cam_empty: int = 0
    examples: list[int] = field(default_factory=list)
    example_images: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def chance(self) -> float:
        return 1.0 / len(self.classes)

    @property
    def background_channels(self) -> list[tuple[str, int, float]]:
        """Every background-driven channel as ``(layer, channel, share)``."""
        return [(c.layer, ch, float(c.shares[ch])) for c in self.channels for ch in c.driven]

    def summary(self) -> str:
        """The verdict and the variants' accuracies, as printed by ``convlens audit``."""
        accs = ", ".join(f"{k} {v:.1%}" for k, v in self.variants.items())
        return f"{self.verdict}\nvariants ({self.n:,} images): {accs}"

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready numbers (what ``convlens audit`` writes to ``audit.json``)."""

        def floats(a: np.ndarray) -> list[float | None]:
            return [_num(v) for v in a]

        return {
            "n": self.n, "classes": list(self.classes), "chance": self.chance, "variants": self.variants,
            "bg_gap": self.bg_gap, "method": self.method, "layer": self.layer,
            "background_mass": {"overall": _num(self.background_mass), "per_class": floats(self.background_mass_per_class)},
            "gradient_mass": {"overall": _num(self.gradient_mass), "per_class": floats(self.gradient_mass_per_class)},
            "channels": [c.to_dict() for c in self.channels],
            "background_channels": [{"layer": lay, "channel": ch, "share": s} for lay, ch, s in self.background_channels],
            "colour": self.colour, "biased": self.biased, "reasons": self.reasons, "verdict": self.verdict,
            "cam_empty": self.cam_empty, "masks": self.masks_from, "foreground_fraction": self.foreground_fraction, "seed": self.seed,
            "examples": self.examples,
        }


def _num(v: float) -> float | None:
    """``v`` as a JSON number; None for NaN (no image of a class, or no positive mass)."""
    return float(v) if np.isfinite(v) else None


# --- inputs --------------------------------------------------------------------------------------


def load_masks(masks: Any, data: ImageDataset) -> np.ndarray:
    """Masks given as a boolean array / tensor ``(N, H, W)`` or a ``.npy`` path, checked against ``data``.

    Raises:
        DataError: the file is missing or not a NumPy array, the masks are not boolean,
            or their shape is not one ``H×W`` mask per image.
    """
    if isinstance(masks, (str, os.PathLike)):
        path = Path(masks)
        try:
            masks = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"masks file {path} does not exist; give a .npy file of boolean N×H×W masks") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"masks file {path} is not a NumPy .npy array ({exc}); save the masks with numpy.save") from None
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    if not isinstance(masks, np.ndarray):
        raise DataError(f"masks must be a boolean array N×H×W or a .npy file, got {type(masks).__name__}")
    _, _, h, w = data.images.shape
    if masks.dtype != np.bool_:
        raise DataError(f"masks must be boolean (True on the object), got {masks.dtype}; convert them, e.g. masks > 0")
    if masks.shape != (len(data), h, w):
        raise DataError(f"masks have shape {masks.shape} but the data holds {len(data)} images of {h}×{w}; give one "
                        f"{h}×{w} mask per image ({len(data)}×{h}×{w})")
    return masks


def conv_layers(model: nn.Module, last: int = 2) -> list[str]:
    """Dotted names of the last ``last`` ``nn.Conv2d`` modules of ``model`` (definition order)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return names[-last:]


def _check_output(out: Any, batch: int, n_classes: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != batch:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"the model returned {shape} for a batch of {batch} images; the audit needs a classifier "
                          "returning scores N × classes")
    if out.shape[1] != n_classes:
        raise ConfigError(f"the model scores {out.shape[1]} classes but the data has {n_classes}; audit it on the "
                          "data it was trained for")
    return out


# --- the audit -----------------------------------------------------------------------------------


def audit(
    model: nn.Module,
    data: ImageDataset,
    *,
    masks: Any = None,
    method: str = "gradcam",
    layer: str | None = None,
    channel_layers: Sequence[str] | None = None,
    batch_size: int = 256,
    seed: int = 0,
    fill: int = 0,
    threshold: int = THRESHOLD,
    dilation: int = DILATION,
    examples: int = 6,
) -> Audit:
    """Audit ``model`` on ``data`` for reliance on the background (and, with 3 channels, on colour).

    Args:
        model: any classifier ``nn.Module`` returning scores ``(N, classes)`` for normalised
            ``(N, C, H, W)`` inputs; left exactly as it came.
        data: the images (uint8, normalised with ``data.normalise`` for the model).
        masks: boolean ``(N, H, W)`` foreground masks (array, tensor or ``.npy`` path);
            ``None`` derives them with ``threshold`` and ``dilation``
            (:func:`convlens.data.masks.foreground_masks`).
        method: the CAM method whose mass is measured; ``layer`` its layer (``None``: the
            method's default, the last spatial layer).
        channel_layers: layers of the feature-map check (default :func:`conv_layers`).
        seed: draws the mixed variants' partners.
        fill: the pixel value (0..255) of emptied areas.
        examples: how many images the variants figure shows (one per class first).

    Raises:
        DataError: empty data, masks of the wrong type or shape.
        ConfigError: the model's output is not ``N × classes`` or has another number of classes.
    """
    from convlens.explain import explain
    from convlens.inspect._state import device_and_dtype, eval_mode

    if not isinstance(data, ImageDataset):
        raise DataError(f"audit needs an ImageDataset (convlens.load_dataset), got {type(data).__name__}")
    if len(data) == 0:
        raise DataError(f"{data.name} {data.split} is empty: there is nothing to audit")
    batch_size = positive_int("batch_size", batch_size)
    if not 0 <= int(fill) <= 255:
        raise ConfigError(f"fill must be a pixel value in 0..255, got {fill!r}")
    if masks is None:
        fg = foreground_masks(data.images, threshold=threshold, dilation=dilation)
        masks_from = f"derived: brightest channel above {threshold} of 255, dilated by {dilation} pixels"
    else:
        fg = load_masks(masks, data)
        masks_from = "given" if not isinstance(masks, (str, os.PathLike)) else f"given: {masks}"
    n, k = len(data), len(data.classes)
    images, labels = data.images, data.labels
    lab = labels.numpy()
    mask_t = torch.from_numpy(fg).to(images.device)
    pairs = {name: torch.from_numpy(j).to(images.device) for name, j in partners(lab, seed).items()}
    colour = data.shape[0] == 3
    names = list(BACKGROUND_VARIANTS) + (list(COLOUR_VARIANTS) if colour else [])
    layers = list(channel_layers) if channel_layers is not None else conv_layers(model)
    dev, _ = device_and_dtype(model)

    correct = dict.fromkeys(names, 0)
    preds = np.zeros(n, dtype=np.int64)
    bg_energy: dict[str, torch.Tensor] = {}
    energy: dict[str, torch.Tensor] = {}
    area: dict[str, float] = dict.fromkeys(layers, 0.0)
    cam_mass = np.zeros((2, n))  # per image: positive mass on the background, in all
    grad_mass = np.zeros((2, n))
    used_layer = layer or ""
    with eval_mode(model):
        blank = _blank_response(model, data, layers, fill, dev)
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n), device=images.device)
            x, m = images[idx], mask_t[idx]
            for name in names:
                j = pairs.get(name)
                xv = variant_batch(name, x, m, images[j[idx]] if j is not None else None,
                                   mask_t[j[idx]] if j is not None else None, fill=fill)
                xin = data.normalise(xv.to(dev))
                if name == "original" and layers:
                    out = _observed_forward(model, xin, layers, blank, m.to(dev), bg_energy, energy, area)
                else:
                    with torch.no_grad():
                        out = model(xin)
                out = _check_output(out, len(idx), k)
                pred = out.argmax(1).cpu()
                correct[name] += int((pred == labels[idx].cpu()).sum())
                if name == "original":
                    preds[idx.cpu().numpy()] = pred.numpy()
            # attribution mass for the predicted class of the original images
            rows = idx.cpu().numpy()
            result = explain(model, data.normalise(x.to(dev)), list(dict.fromkeys([method, "saliency"])), layer=layer,
                             target=torch.from_numpy(preds[rows]).to(dev))
            used_layer = ", ".join(result[method].layers)
            bgw = (~m).cpu().to(torch.float64)
            cam_mass[:, rows] = _masses(result[method].maps.detach().cpu(), bgw)
            grad_mass[:, rows] = _masses(result["saliency"].maps.detach().cpu(), bgw)

    variants = {name: correct[name] / n for name in names}
    bg_gap = variants["mixed-same"] - variants["mixed-rand"]
    channels = []
    for name in layers:
        if name not in energy:
            continue
        shares = (bg_energy[name] / energy[name].clamp_min(1e-30)).cpu().numpy()
        shares = np.where(energy[name].cpu().numpy() > 0, shares, 0.0)
        a = area[name] / n
        driven = [int(c) for c in np.argsort(-shares, kind="stable") if shares[c] > max(CHANNEL_SHARE, a)]
        channels.append(ChannelCheck(name, shares, a, driven))
    cam_empty = int((cam_mass[1] <= 0).sum())
    mass, mass_pc = _pooled(cam_mass, lab, k)
    gmass, gmass_pc = _pooled(grad_mass, lab, k)
    colour_check = _colour_check(variants, data, preds) if colour else None
    biased, reasons, verdict = _verdict(variants, bg_gap, mass, channels, colour_check, k, method)
    shown = _examples(lab, k, examples)
    example_images = {}
    if shown:
        idx = torch.as_tensor(shown, device=images.device)
        x, m = images[idx], mask_t[idx]
        for name in names:
            j = pairs.get(name)
            example_images[name] = variant_batch(name, x, m, images[j[idx]] if j is not None else None,
                                                 mask_t[j[idx]] if j is not None else None, fill=fill).cpu().numpy()
    return Audit(n=n, classes=tuple(data.classes), variants=variants, bg_gap=bg_gap, method=method,
                 layer=used_layer, background_mass=mass, background_mass_per_class=mass_pc, gradient_mass=gmass,
                 gradient_mass_per_class=gmass_pc, channels=channels, colour=colour_check, biased=biased,
                 reasons=reasons, verdict=verdict, masks_from=masks_from, foreground_fraction=float(fg.mean()),
                 seed=seed, cam_empty=cam_empty, examples=shown, example_images=example_images)


def _blank_response(model: nn.Module, data: ImageDataset, layers: list[str], fill: int,
                    dev: torch.device) -> dict[str, torch.Tensor]:
    """Each layer's output ``(1, C, h, w)`` for one empty image (every pixel ``fill``)."""
    from convlens.inspect.capture import capture_once

    if not layers:
        return {}
    c, h, w = data.shape
    x = data.normalise(torch.full((1, c, h, w), fill, dtype=torch.uint8, device=dev))
    res = capture_once(model, x, layers)
    out: dict[str, torch.Tensor] = {}
    for name in layers:
        v = res.activations.get(name)
        if isinstance(v, torch.Tensor) and v.dim() == 4:
            out[name] = v
    return out


def _observed_forward(model: nn.Module, x: torch.Tensor, layers: list[str], blank: dict[str, torch.Tensor],
                      m: torch.Tensor, bg_energy: dict[str, torch.Tensor], energy: dict[str, torch.Tensor],
                      area: dict[str, float]) -> Any:
    """``model(x)`` while adding each layer's per-channel energy (total and on the background)."""
    import torch.nn.functional as F

    from convlens.inspect.capture import observe

    def reduce(name: str, value: Any) -> None:
        if name not in blank or not isinstance(value, torch.Tensor) or value.dim() != 4:
            return
        e = (value.detach().to(torch.float64) - blank[name].to(torch.float64)).square()  # (B, C, h, w)
        bg = 1.0 - F.adaptive_avg_pool2d(m[:, None].to(torch.float64), (int(e.shape[-2]), int(e.shape[-1])))  # (B, 1, h, w)
        on_bg, total = (e * bg).sum((0, 2, 3)), e.sum((0, 2, 3))
        bg_energy[name] = bg_energy[name] + on_bg if name in bg_energy else on_bg
        energy[name] = energy[name] + total if name in energy else total
        area[name] += float(bg.mean((1, 2, 3)).sum())

    with torch.no_grad(), observe(model, layers, reduce):
        return model(x)


def _masses(maps: torch.Tensor, bg: torch.Tensor) -> np.ndarray:
    """``(2, R)``: per row, the positive map's mass on the background and in all."""
    maps = maps.to(torch.float64).clamp_min(0)
    return torch.stack([(maps * bg).sum((1, 2)), maps.sum((1, 2))]).numpy()


def _pooled(mass: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Background share of the mass summed over all images, and over each class's images
    (NaN where there is no positive mass)."""

    def share(keep: np.ndarray) -> float:
        total = float(mass[1, keep].sum())
        return float(mass[0, keep].sum()) / total if total > 0 else float("nan")

    return share(np.ones(len(labels), dtype=bool)), np.array([share(labels == c) for c in range(k)])


def _examples(labels: np.ndarray, k: int, count: int) -> list[int]:
    """One image per class in class order, then the next ones, ``count`` in all."""
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(k) if (labels == c).any()]
    taken = set(first)
    rest = [i for i in range(min(len(labels), count + k)) if i not in taken]
    return (first + rest)[:max(int(count), 0)]


def _colour_check(variants: dict[str, float], data: ImageDataset, preds: np.ndarray) -> dict[str, Any]:
    """The colour variants against the original; the strongest swap and, per dominant colour
    of an image, the class the model predicts for most such images."""
    chance = 1.0 / len(data.classes)
    orig = variants["original"]
    moves = {v: variants[v] - orig for v in COLOUR_VARIANTS}
    strongest = max(moves, key=lambda v: abs(moves[v]))
    acc = variants[strongest]
    shortcut = abs(moves[strongest]) >= COLOUR_LIMIT and min(acc, orig) < chance
    dominant = data.images.to(torch.float64).sum((2, 3)).argmax(1).numpy()  # brightest channel of each image
    by_colour = {}
    for c, colour_name in enumerate(CHANNEL_NAMES):
        hit = dominant == c
        if hit.sum() == 0:
            continue
        counts = np.bincount(preds[hit], minlength=len(data.classes))
        top = int(counts.argmax())
        by_colour[colour_name] = {"images": int(hit.sum()), "predicted": data.classes[top],
                                  "share": float(counts[top] / hit.sum())}
    return {"shortcut": bool(shortcut), "strongest": strongest, "change": moves[strongest], "moves": moves,
            "by_colour": by_colour}


def _pct(v: float) -> str:
    return f"{v:.0%}"


def _verdict(variants: dict[str, float], bg_gap: float, mass: float, channels: list[ChannelCheck],
             colour: dict[str, Any] | None, k: int, method: str) -> tuple[bool, list[str], str]:
    chance = 1.0 / k
    only_bg = variants["only-background"]
    from convlens.explain import get_method

    title = get_method(method).title
    signs: list[str] = []
    bg_sign = f"{_pct(only_bg)} accuracy on only-background images (chance {_pct(chance)})"
    gap_sign = f"BG-Gap {bg_gap * 100:.1f} pp"
    mass_sign = f"{_pct(mass)} of {title} mass on the background"
    n_driven = sum(len(c.driven) for c in channels)
    n_channels = sum(len(c.shares) for c in channels)
    gap_high = bg_gap >= BG_GAP_LIMIT
    only_high = only_bg >= chance + ONLY_BG_LIMIT * (1 - chance)
    mass_high = np.isfinite(mass) and mass >= MASS_LIMIT
    background = gap_high or (only_high and mass_high)
    if only_high:
        signs.append(bg_sign)
    if gap_high:
        signs.append(gap_sign)
    if mass_high:
        signs.append(mass_sign)
    if background and n_driven:
        signs.append(f"{n_driven} of {n_channels} channels of {', '.join(c.layer for c in channels)} fire mostly "
                     "on the background")
    colour_bias = bool(colour and colour["shortcut"])
    if colour_bias and colour is not None:
        swap = colour["strongest"]
        what = "made gray" if swap == "grayscale" else " and ".join(swap.split("-")[1:]) + " swapped"
        orig = variants["original"]
        cue = "; ".join(f"it predicts {v['predicted']!r} for {_pct(v['share'])} of {c} images"
                        for c, v in colour["by_colour"].items())
        signs.append(f"colour shortcut: accuracy moves from {_pct(orig)} to {_pct(variants[swap])} (chance "
                     f"{_pct(chance)}) with {what}: {cue}")
    parts = []
    if background:
        parts.append("likely background-biased: " + ", ".join(s for s in signs if not s.startswith("colour")))
    if colour_bias:
        parts.append("likely colour-biased: " + next(s for s in signs if s.startswith("colour")).removeprefix(
            "colour shortcut: "))
    if parts:
        return True, signs, "; ".join(parts)
    checked = [bg_sign, gap_sign, mass_sign]
    if colour is not None:
        checked.append(f"colour changes move accuracy by at most {abs(colour['change']) * 100:.1f} pp")
    return False, checked, "no sign of background or colour bias: " + ", ".join(checked)
