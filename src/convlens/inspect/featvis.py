"""Feature visualisation: the input a channel (or one unit) of a layer responds to most.

:func:`featvis` finds it by gradient ascent on the input (activation maximisation,
Erhan et al. 2009; Olah et al., "Feature Visualization", Distill 2017), for any layer of
any ``nn.Module``, in the model's own input geometry: 1, 3 or any number of channels, at
its native size (nothing is upsampled), through the model's own normalisation. All the
requested channels of a layer are optimised as one batch (image ``i`` is scored by its
own channel only, so the images do not interact); the result is deterministic for a
``seed`` on the CPU.

What is optimised (``param``):

* ``"fourier"`` (default): the image's 2-D spectrum, each frequency scaled by
  ``1 / f**decay``, so that the ascent moves low frequencies first (natural images have
  most of their energy there); with exactly 3 channels the colours are decorrelated
  (an opponent basis: luminance, red-green, blue-yellow) so that colour does not come
  out as noise;
* ``"pixels"``: the pixels themselves.

The image lives in pixel space [0, 1] (a sigmoid keeps it there) and is normalised with
the model's ``mean`` and ``std`` before the model sees it. With ``max_norm`` it lives in
the model's input space instead, inside the L2 ball of that radius (the classic
"L2-bounded input" of activation maximisation, with a known optimum for a linear unit).

Regularisers: random ``jitter`` (pixels), ``scale`` and ``rotate`` (degrees) applied
before every step (transformation robustness), total variation ``tv``, an ``l2``
penalty on the model input, and a ``diversity`` term between the ``per_channel``
images of one channel (pairwise cosine similarity of their Gram matrices at ``layer``).

Activations are read through :func:`convlens.inspect.capture.capture` (its gradients
form); the model runs in eval mode and comes back exactly as it went in (no ``.grad``
is touched: gradients are taken with respect to the image only).

>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
>>> vis = featvis(model, "0", [1, 2], steps=8, input_shape=(1, 12, 12))
>>> vis.images.shape, vis.channels
((2, 1, 12, 12), [1, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens.errors import ConfigError, positive_int
from convlens.inspect._state import device_and_dtype, eval_mode
from convlens.inspect.capture import capture, resolve_layers

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["FeatVis", "Param", "featvis", "layer_channels", "reliability"]

Param = Literal["fourier", "pixels"]

#: The most images one call optimises (channels × per_channel); more is a budget error.
MAX_IMAGES = 1024
#: The most optimisation steps one call takes (a few hundred are usual).
MAX_STEPS = 20000

# An orthonormal opponent-colour basis (rows: luminance, red-green, blue-yellow), each
# scaled down by how much that component varies in natural colour images (luminance
# most): what "decorrelated colour" means here. Our own choice, not a dataset's matrix.
_OPPONENT = np.array([[1 / math.sqrt(3)] * 3,
                      [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
                      [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)]])
_OPPONENT_SCALE = np.array([1.0, 0.35, 0.25])


@dataclass
class FeatVis:
    """What :func:`featvis` found.

    ``images`` (N, C, H, W): the optimised inputs as drawn, pixel values in [0, 1] (with
    ``max_norm``: the model input itself). ``inputs``: what the model reads (normalised).
    ``channels`` (N): the channel each image maximises (each repeated ``per_channel``
    times). ``activation`` (N): the objective on the untransformed image at the end (the
    mean over space of the channel's positive part, or the unit's value). ``peak`` (N): the channel's maximum
    over space on it (what :func:`convlens.inspect.topk_examples` ranks natural inputs
    by). ``history`` (steps, N): the objective at every step (on the transformed image).
    """

    layer: str
    channels: list[int]
    images: NDArray[np.float64]
    inputs: Tensor
    activation: NDArray[np.float64]
    peak: NDArray[np.float64]
    history: NDArray[np.float64]
    unit: tuple[int, int] | None
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.channels)


def layer_channels(model: nn.Module, layer: str, input_shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """``(channels, output shape)`` of ``layer`` for one input of ``input_shape`` (one
    forward pass of zeros); a layer whose output has no channel axis is a ConfigError."""
    device, dtype = device_and_dtype(model)
    with eval_mode(model), torch.no_grad(), capture(model, layer) as cap:
        model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    value = cap[layer]
    if isinstance(value, list):
        value = value[0]
    if not isinstance(value, Tensor) or value.dim() not in (2, 4):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ConfigError(f"layer {layer!r} outputs {shape}, which has no channels to visualise; choose a layer "
                          "whose output is (N, C, H, W) or (N, C), e.g. a Conv2d or Linear")
    return int(value.shape[1]), tuple(value.shape[1:])


def _source(model: Any) -> tuple[nn.Module, tuple[int, int, int] | None, tuple[Any, Any] | None]:
    """The module, input shape and normalisation of an ``nn.Module``, a run or a handle."""
    if isinstance(model, nn.Module):
        return model, None, None
    from convlens.models.handle import ModelHandle
    from convlens.models.run import Run

    if isinstance(model, Run):
        model = ModelHandle.from_run(model)
    if isinstance(model, ModelHandle):
        return model.model, model.input_shape, model.normalisation()
    raise ConfigError(f"expected a torch.nn.Module, a run or a model handle, got {type(model).__name__}")


def _per_channel(name: str, value: float | Sequence[float] | None, c: int, default: float) -> Tensor:
    if value is None:
        values = [default] * c
    elif isinstance(value, (int, float)):
        values = [float(value)] * c
    else:
        values = [float(v) for v in value]
        if len(values) == 1:
            values *= c
    if len(values) != c or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{name} needs 1 or {c} finite values (one per input channel), got {value!r}")
    return torch.tensor(values, dtype=torch.float64).view(1, c, 1, 1)


class _Image:
    """The parametrised image batch: ``(N, C, H, W)`` from the tensor being optimised."""

    def __init__(self, n: int, shape: tuple[int, int, int], param: Param, decay: float, bounded: bool,
                 gen: torch.Generator, device: torch.device) -> None:
        c, h, w = shape
        self.shape, self.param, self.bounded = shape, param, bounded
        if param == "fourier":
            fy = torch.fft.fftfreq(h).abs()[:, None]
            fx = torch.fft.rfftfreq(w)[None, :]
            freq = torch.sqrt(fy**2 + fx**2).clamp(min=1.0 / max(h, w))
            self.spectrum_scale = (1.0 / freq**decay).to(device)  # (H, W//2+1)
            self.spectrum_scale = self.spectrum_scale / self.spectrum_scale.max()
            raw = torch.randn((n, c, h, w // 2 + 1, 2), generator=gen, dtype=torch.float32) * 0.01
        else:
            raw = torch.randn((n, c, h, w), generator=gen, dtype=torch.float32) * 0.01
        self.raw = raw.to(device).requires_grad_(True)
        self.colour: Tensor | None = None
        if c == 3:
            self.colour = torch.tensor((_OPPONENT.T * _OPPONENT_SCALE).astype(np.float32), device=device)

    def __call__(self) -> Tensor:
        _, h, w = self.shape
        if self.param == "fourier":
            spec = torch.view_as_complex(self.raw) * self.spectrum_scale
            x = torch.fft.irfft2(spec, s=(h, w), norm="ortho")  # (N, C, H, W)
            x = x * math.sqrt(h * w) / 4.0  # unit-ish pixel scale whatever the size
        else:
            x = self.raw
        if self.colour is not None:  # opponent components -> RGB: (N, 3, H, W)
            x = torch.einsum("rk,nkhw->nrhw", self.colour, x)
        return torch.sigmoid(x) if self.bounded else x


def _transform(x: Tensor, gen: torch.Generator, jitter: int, scale: Sequence[float], rotate: float,
               fill: Tensor | None) -> Tensor:
    """One random shift (up to ``jitter`` pixels), scale (from ``scale``) and rotation (up
    to ``rotate`` degrees), the same for the whole batch, at the image's own size."""
    n, _, h, w = x.shape
    if jitter:
        dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    s = float(scale[int(torch.randint(len(scale), (1,), generator=gen))]) if scale else 1.0
    a = math.radians(float((torch.rand((), generator=gen) * 2 - 1) * rotate)) if rotate else 0.0
    if s == 1.0 and a == 0.0:
        return x
    cos, sin = math.cos(a) / s, math.sin(a) / s
    theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(n, 2, 3), list(x.shape), align_corners=False)
    if fill is None:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


def _total_variation(x: Tensor) -> Tensor:  # (N,) mean absolute difference of neighbours
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean(dim=(1, 2, 3)) if x.shape[2] > 1 else x.new_zeros(len(x))
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean(dim=(1, 2, 3)) if x.shape[3] > 1 else x.new_zeros(len(x))
    return dy + dx


#: Slope of the negative part in the channel objective (see :func:`_objective`).
LEAK = 0.01


def _objective(value: Tensor, index: Tensor, unit: tuple[int, int] | None) -> Tensor:
    """Image ``i``'s score: channel ``index[i]`` of ``value`` (N, C[, H, W]); for a map, its
    value at ``unit``, or the mean over space of its positive part (what a ReLU after it
    passes on; the negative part counts with slope :data:`LEAK`, so that a channel
    negative everywhere still has a gradient). Without the positive part, a pre-activation
    map's mean rewards making most of the map less negative rather than making the
    channel fire."""
    rows = torch.arange(len(index), device=value.device)
    picked = value[rows, index]  # (N,) or (N, H, W)
    if picked.dim() == 1:
        return picked
    if unit is not None:
        return picked[:, unit[0], unit[1]]
    return F.leaky_relu(picked, LEAK).flatten(1).mean(dim=1)


def _gram_diversity(value: Tensor, groups: int, per: int) -> Tensor:
    """Mean pairwise cosine similarity of the Gram matrices of the ``per`` images of each
    of the ``groups`` channels (lower is more diverse)."""
    if per < 2 or value.dim() != 4:
        return value.new_zeros(())
    n, c = value.shape[:2]
    flat = value.reshape(n, c, -1)
    gram = F.normalize((flat @ flat.transpose(1, 2)).reshape(groups, per, -1), dim=2)  # (G, P, C*C)
    sim = gram @ gram.transpose(1, 2)  # (G, P, P)
    off = ~torch.eye(per, dtype=torch.bool, device=value.device)
    return sim[:, off].mean()


def featvis(
    model: Any,
    layer: str,
    channels: Sequence[int] | None = None,
    *,
    steps: int = 256,
    unit: tuple[int, int] | None = None,
    input_shape: Sequence[int] | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    param: Param = "fourier",
    decay: float = 1.0,
    lr: float = 0.1,
    jitter: int = 1,
    scale: Sequence[float] = (1.0, 0.975, 1.025, 0.95, 1.05),
    rotate: float = 5.0,
    tv: float = 0.0,
    l2: float = 0.0,
    diversity: float = 0.0,
    per_channel: int = 1,
    max_norm: float | None = None,
    seed: int = 0,
) -> FeatVis:
    """Optimise one input per requested channel of ``layer`` to maximise it.

    Args:
        model: any ``nn.Module`` (then ``input_shape`` is required), a run or a model
            handle (their input shape and normalisation are used).
        layer: dotted name of the layer (its output must be (N, C, H, W) or (N, C)).
        channels: which channels (default: all of the layer's).
        steps: Adam steps (learning rate ``lr``).
        unit: ``(row, col)``: maximise that one unit of each channel's map instead of the
            mean of the channel's positive part over space.
        input_shape: ``(C, H, W)`` of one input (default: the run's or handle's).
        mean, std: the model's input normalisation (one value or one per channel;
            default: the run's, else none: mean 0, std 1).
        param, decay: ``"fourier"`` (spectrum scaled by ``1/f**decay``) or ``"pixels"``.
        jitter, scale, rotate: transformation robustness (pixels, scale factors, degrees).
        tv, l2: weights of total variation (on the pixels) and of the squared L2 norm of
            the model input (per value).
        diversity, per_channel: ``per_channel`` images per channel, pushed apart with
            weight ``diversity``.
        max_norm: optimise in the model's input space inside the L2 ball of this radius
            (no pixel range, no normalisation).
        seed: seeds the start and the random transforms.

    Raises:
        ConfigError: an empty or out-of-range channel list, a layer without channels,
            a non-positive ``steps``, a unit outside the map (one line each).
    """
    steps = positive_int("steps", steps)
    if steps > MAX_STEPS:
        raise ConfigError(f"steps={steps} is more than the {MAX_STEPS} one visualisation takes; a few hundred "
                          "are usual (--steps 256)")
    per_channel = positive_int("per_channel", per_channel)
    if param not in ("fourier", "pixels"):
        raise ConfigError(f"unknown param {param!r}: use 'fourier' or 'pixels'")
    for name, v in (("lr", lr), ("tv", tv), ("l2", l2), ("diversity", diversity), ("rotate", rotate),
                    ("decay", decay)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0) or (name == "lr" and v == 0):
            raise ConfigError(f"{name} must be a {'positive' if name == 'lr' else 'non-negative'} number, got {v!r}")
    if isinstance(jitter, bool) or not isinstance(jitter, int) or jitter < 0:
        raise ConfigError(f"jitter must be a whole number of pixels >= 0, got {jitter!r}")
    if any(not (math.isfinite(float(s)) and float(s) > 0) for s in scale):
        raise ConfigError(f"scale factors must be positive, got {list(scale)}")
    if max_norm is not None and not (math.isfinite(max_norm) and max_norm > 0):
        raise ConfigError(f"max_norm must be a positive radius, got {max_norm!r}")
    module, shape, norm = _source(model)
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)  # type: ignore[assignment]  # checked just below
    if shape is None or len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape must be (C, H, W) of one input, got {input_shape!r}; pass "
                          "input_shape=(1, 28, 28) for an MNIST model")
    c_in = shape[0]
    if mean is None and std is None and norm is not None:
        mean, std = norm
    mean_t = _per_channel("mean", mean, c_in, 0.0)
    std_t = _per_channel("std", std, c_in, 1.0)
    if (std_t <= 0).any():
        raise ConfigError(f"std must be positive, got {std!r}")
    resolve_layers(module, layer)
    n_channels, out_shape = layer_channels(module, layer, shape)
    chosen = list(range(n_channels)) if channels is None else [int(c) for c in channels]
    if not chosen:
        raise ConfigError("channels is empty; pass channel numbers, or None for all")
    bad = [c for c in chosen if not 0 <= c < n_channels]
    if bad:
        raise ConfigError(f"channel {bad[0]} is out of range: {layer} has channels 0..{n_channels - 1}")
    if unit is not None:
        if len(out_shape) != 3:
            raise ConfigError(f"unit= needs a spatial layer; {layer} outputs {out_shape}")
        i, j = unit
        if not (0 <= i < out_shape[1] and 0 <= j < out_shape[2]):
            raise ConfigError(f"unit {unit} is outside {layer}'s {out_shape[1]}×{out_shape[2]} map")
        unit = (int(i), int(j))
    n = len(chosen) * per_channel
    if n > MAX_IMAGES:
        raise ConfigError(f"{len(chosen)} channels × {per_channel} images is {n}, more than the {MAX_IMAGES} one call "
                          "optimises; ask for fewer channels")

    device, dtype = device_and_dtype(module)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    bounded = max_norm is None
    image = _Image(n, shape, param, float(decay), bounded, gen, device)
    index = torch.tensor([c for c in chosen for _ in range(per_channel)], device=device)
    mean_d, std_d = mean_t.to(device, dtype), std_t.to(device, dtype)
    fill = None if bounded else torch.zeros((), device=device)
    scales = tuple(float(s) for s in scale)
    opt = torch.optim.Adam([image.raw], lr=float(lr))

    def model_input(pixels: Tensor) -> Tensor:
        if bounded:
            return (pixels.to(dtype) - mean_d) / std_d
        flat = pixels.flatten(1).norm(dim=1).clamp(min=1e-12)
        factor = (float(max_norm) / flat).clamp(max=1.0)  # type: ignore[arg-type]  # max_norm is set here
        return (pixels * factor.view(-1, 1, 1, 1)).to(dtype)

    history = np.zeros((steps, n))
    cap = capture(module, layer, gradients=True)
    with eval_mode(module), torch.inference_mode(False), torch.enable_grad():
        for step in range(steps):
            pixels = image()
            x = model_input(pixels)
            seen = _transform(x, gen, jitter, scales, float(rotate), fill)
            with cap:
                module(seen)
            value = cap[layer]
            value = value[0] if isinstance(value, list) else value
            score = _objective(value, index, unit)
            loss = -score.sum()
            if tv:
                loss = loss + tv * _total_variation(pixels).sum()
            if l2:
                loss = loss + l2 * x.pow(2).flatten(1).mean(dim=1).sum()
            if diversity and per_channel > 1:
                loss = loss + diversity * len(chosen) * _gram_diversity(value, len(chosen), per_channel)
            (grad,) = torch.autograd.grad(loss, [image.raw])
            image.raw.grad = grad
            opt.step()
            image.raw.grad = None
            history[step] = score.detach().cpu().double().numpy()
            cap.clear()
        with torch.no_grad():
            pixels = image()
            x = model_input(pixels)
        final, peak = _scores(module, layer, x, index, unit)
    shown = pixels.detach().cpu().double().numpy()
    settings = {"steps": steps, "param": param, "decay": decay, "lr": lr, "jitter": jitter, "scale": list(scales),
                "rotate": rotate, "tv": tv, "l2": l2, "diversity": diversity, "per_channel": per_channel,
                "max_norm": max_norm, "seed": seed, "input_shape": list(shape),
                "mean": mean_t.flatten().tolist(), "std": std_t.flatten().tolist()}
    return FeatVis(layer, index.tolist(), shown, x.detach(), final, peak, history, unit, settings)


def _scores(model: nn.Module, layer: str, x: Tensor, index: Tensor,
            unit: tuple[int, int] | None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The objective and the channel's spatial maximum on ``x`` (no transforms)."""
    with torch.no_grad(), capture(model, layer) as cap:
        model(x)
    value = cap[layer]
    value = value[0] if isinstance(value, list) else value
    rows = torch.arange(len(index), device=value.device)
    picked = value[rows, index]
    peak = picked.flatten(1).amax(dim=1) if picked.dim() > 1 else picked
    return (_objective(value, index, unit).cpu().double().numpy(), peak.cpu().double().numpy())


def earlier_layer(model: nn.Module, layer: str) -> str | None:
    """The ``Conv2d`` or ``Linear`` before the one that computes ``layer`` (``layer`` itself
    if it is one, else the last one before it in ``named_modules()`` order, so that
    ``relu2`` and ``conv2`` both look back to ``conv1``); None when there is none (the
    input itself is then the earlier representation)."""
    weighted: list[str] = []
    for name, module in model.named_modules():
        if name and isinstance(module, (nn.Conv2d, nn.Linear)) and not layer.startswith(name + "."):
            weighted.append(name)
        if name == layer:
            break
    return weighted[-2] if len(weighted) >= 2 else None


@dataclass
class Reliability:
    """How far to trust a visualisation (Borowski et al. 2021; Geirhos et al. 2024).

    ``ratio`` (N): the channel's maximum on the optimised image as a multiple of its
    maximum on the best natural input (above 1: the image excites it more than any
    natural example). ``similarity`` (N): cosine similarity, at ``earlier`` (the layer
    before, or the input pixels), between the optimised image's spatially averaged
    activations and those of the channel's natural top-k (mean over the k); near 1: the
    image is made of what natural inputs are made of at that depth.
    """

    ratio: NDArray[np.float64]
    similarity: NDArray[np.float64]
    earlier: str


def reliability(model: Any, vis: FeatVis, natural: Tensor, best: Sequence[float] | Tensor) -> Reliability:
    """Score ``vis`` against natural examples: ``natural`` (N, k, C, H, W) model inputs
    (normalised), image i's channel's top-k; ``best`` (N) the channel's highest natural
    activation (what :func:`convlens.inspect.topk_examples` reports in ``values[:, 0]``)."""
    module, _, _ = _source(model)
    best_t = torch.as_tensor(best, dtype=torch.float64).flatten()
    if natural.dim() != 5 or natural.shape[0] != len(vis) or len(best_t) != len(vis):
        raise ConfigError(f"natural must be (N, k, C, H, W) and best (N) for the {len(vis)} visualisations, "
                          f"got {tuple(natural.shape)} and {tuple(best_t.shape)}")
    ratio = vis.peak / np.where(best_t.numpy() > 0, best_t.numpy(), np.nan)
    earlier = earlier_layer(module, vis.layer)
    n, k = natural.shape[:2]
    device, dtype = device_and_dtype(module)
    both = torch.cat((vis.inputs.to(device, dtype), natural.flatten(0, 1).to(device, dtype)))
    if earlier is None:
        feats = both.flatten(2).mean(dim=2) if both.shape[1] > 1 else both.flatten(1)
        feats = feats - feats.mean(dim=1, keepdim=True) if both.shape[1] == 1 else feats
        name = "the input"
    else:
        with eval_mode(module), torch.no_grad(), capture(module, earlier) as cap:
            module(both)
        value = cap[earlier]
        value = value[0] if isinstance(value, list) else value
        feats = value.flatten(2).mean(dim=2) if value.dim() == 4 else value
        name = earlier
    feats = feats.double().cpu()
    mine, theirs = feats[:n], feats[n:].reshape(n, k, -1)
    sim = F.cosine_similarity(mine[:, None, :], theirs, dim=2).mean(dim=1)
    return Reliability(ratio, sim.numpy(), name)
