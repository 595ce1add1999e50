"""The engine under :func:`convlens.cam` and :func:`convlens.explain.explain`.

Several methods asked for together share one **forward pass** (:func:`forward_pass`),
which reads the layers they need through :func:`convlens.capture`, and the **backward
passes** of each target round (:func:`backward_pass`): one ordinary pass for layer and
input gradients, and one guided pass when guided backpropagation is asked for. What the
methods then read is one :class:`Pass`. :func:`run_methods` does all of it with the model
in eval mode and hands every ``training`` flag back afterwards.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3))
>>> fwd = forward_pass(model, torch.randn(1, 1, 5, 5), ["1"], gradients=True)
>>> plan = plan_targets(None, fwd.logits.detach())
>>> layer_grads, _, _ = backward_pass(fwd, plan, layer_gradients=True)
>>> layer_grads[0]["1"].shape
torch.Size([1, 2, 3, 3])
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from convlens._progress import batches, chunks
from convlens.errors import ConfigError
from convlens.explain._guided import GuidedReLUs
from convlens.inspect._state import eval_mode
from convlens.inspect.capture import capture, resolve_layers
from convlens.inspect.targets import Target, TargetPlan, plan_targets

if TYPE_CHECKING:  # pragma: no cover
    from convlens.explain.base import Explanation, Method


def prepare(model: nn.Module, x: Any) -> Tensor:
    """``x`` as an ``(N, C, H, W)`` float tensor on the model's device and in its dtype."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"expected a torch.nn.Module, got {type(model).__name__}; pass the model itself")
    if not isinstance(x, Tensor):
        raise ConfigError(f"x must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] == 0:
        raise ConfigError(f"x must have shape (N, C, H, W) (or (C, H, W) for one image), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ConfigError(
            f"x must be a float tensor normalised as the model expects, got dtype {x.dtype}; "
            "e.g. dataset.item(i)[0] or convlens.data.normalise(pixels, mean, std)"
        )
    tensors = itertools.chain(model.parameters(), model.buffers())
    reference = next((t for t in tensors if t.is_floating_point()), None)  # the first is enough
    if reference is not None:
        x = x.to(device=reference.device, dtype=reference.dtype)
    return x.detach()


def scores(logits: Any) -> Tensor:
    """The model output, checked to be a tensor of scores."""
    if not isinstance(logits, Tensor):
        raise ConfigError(
            f"the model returned a {type(logits).__name__}; explanations need a tensor of scores "
            "(batch, classes): wrap the model so that forward returns one"
        )
    return logits


def spatial(name: str, value: Any) -> Tensor:
    """A captured layer value, checked to be one ``(N, C, H, W)`` map."""
    if isinstance(value, list):
        raise ConfigError(
            f"layer {name!r} ran {len(value)} times in one forward pass, so it has no single map; "
            "pick a layer that runs once"
        )
    if not isinstance(value, Tensor) or value.dim() != 4:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ConfigError(
            f"layer {name!r} outputs {shape}, not a spatial map (N, C, H, W); pick a "
            "convolutional layer (convlens.inspect.layers(model, shape).target suggests one)"
        )
    return value


@dataclass
class Forward:
    """One forward pass: the (live, with gradients) logits and layer activations, the
    input it differentiates (``xin``), and the guided-ReLU mode if one was recorded."""

    model: nn.Module
    x: Tensor
    xin: Tensor
    logits: Tensor
    activations: dict[str, Tensor]
    guided: GuidedReLUs | None = None


def forward_pass(
    model: nn.Module,
    x: Tensor,
    layers: Sequence[str] = (),
    *,
    gradients: bool = False,
    input_gradients: bool = False,
    guided: bool = False,
) -> Forward:
    """Run ``model(x)`` once, reading ``layers`` (``(N, K, h, w)`` each).

    Without any gradients the pass runs under ``no_grad``. Otherwise the graph is
    recorded; ``input_gradients`` or ``guided`` also record it from the input, and
    ``guided`` runs the pass under :class:`~convlens.explain._guided.GuidedReLUs`.
    """
    names = tuple(layers)
    if not (gradients or input_gradients or guided):
        with torch.no_grad():
            if not names:
                return Forward(model, x, x, scores(model(x)), {})
            with capture(model, names) as cap:
                logits = scores(model(x))
            return Forward(model, x, x, logits, {n: spatial(n, cap[n]) for n in names})
    if torch.is_inference_mode_enabled():
        raise ConfigError("gradient-based explanations cannot run inside torch.inference_mode(): call them outside it")
    xin = x.detach().requires_grad_(True) if (input_gradients or guided) else x
    mode = GuidedReLUs() if guided else None
    reader = capture(model, names, gradients=True) if names else None
    # (a Capture is a Mapping, falsy until something ran: hence no `reader or ...` here)
    with torch.enable_grad(), reader if reader is not None else contextlib.nullcontext(), \
            mode if mode is not None else contextlib.nullcontext():
        logits = scores(model(xin))
    activations = {n: spatial(n, reader[n]) for n in names} if reader is not None else {}
    return Forward(model, x, xin, logits, activations, mode)


def backward_pass(
    fwd: Forward,
    plan: TargetPlan,
    *,
    layer_gradients: bool = False,
    input_gradients: bool = False,
) -> tuple[list[dict[str, Tensor]], list[Tensor], list[Tensor]]:
    """The gradients of each target round's scores (summed over the batch; samples do not
    interact in eval mode): per round, the layer gradients ``{layer: (N, K, h, w)}``, the
    input gradients and, if the forward pass was guided, the guided input gradients."""
    names = list(fwd.activations) if layer_gradients else []
    wrt = [fwd.activations[n] for n in names] + ([fwd.xin] if input_gradients else [])
    layer_grads: list[dict[str, Tensor]] = []
    input_grads: list[Tensor] = []
    guided_grads: list[Tensor] = []
    for j in range(plan.rounds):
        outputs, weights = plan.seed(fwd.logits, j)  # sum(weights * outputs): the scores' total
        last = j == plan.rounds - 1
        if wrt:
            grads = torch.autograd.grad(outputs, wrt, weights, retain_graph=fwd.guided is not None or not last,
                                        allow_unused=True)
            full = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt, strict=True)]
            if names:
                layer_grads.append(dict(zip(names, full, strict=False)))
            if input_gradients:
                input_grads.append(full[-1])
        if fwd.guided is not None:
            with fwd.guided.backward():
                (g,) = torch.autograd.grad(outputs, [fwd.xin], weights, retain_graph=not last, allow_unused=True)
            guided_grads.append(torch.zeros_like(fwd.xin) if g is None else g)
    return layer_grads, input_grads, guided_grads


@dataclass
class Pass:
    """What the methods sharing one pass read.

    ``activations[layer]`` is ``(N, K, h, w)`` (detached); ``layer_gradients[j][layer]`` and
    ``input_gradients[j]``/``guided_gradients[j]`` are the gradients of the round-``j``
    target scores.
    """

    model: nn.Module
    x: Tensor
    logits: Tensor
    plan: TargetPlan
    activations: dict[str, Tensor]
    layer_gradients: list[dict[str, Tensor]]
    input_gradients: list[Tensor]
    guided_gradients: list[Tensor]


def shared_pass(
    model: nn.Module,
    x: Tensor,
    target: Target,
    layers: Sequence[str] = (),
    *,
    layer_gradients: bool = False,
    input_gradients: bool = False,
    guided: bool = False,
) -> Pass:
    """:func:`forward_pass`, the targets resolved, then :func:`backward_pass`. The caller
    holds :class:`~convlens.inspect._state.eval_mode`."""
    fwd = forward_pass(model, x, layers, gradients=layer_gradients, input_gradients=input_gradients, guided=guided)
    logits = fwd.logits.detach()
    plan = plan_targets(target, logits)
    grads: tuple[list[dict[str, Tensor]], list[Tensor], list[Tensor]] = ([], [], [])
    if layer_gradients or input_gradients or guided:
        grads = backward_pass(fwd, plan, layer_gradients=layer_gradients, input_gradients=input_gradients)
    activations = {n: a.detach() for n, a in fwd.activations.items()}
    return Pass(model, x, logits, plan, activations, *grads)


def run_methods(model: nn.Module, x: Tensor, methods: Sequence[Method], target: Target = None) -> list[Explanation]:
    """Explain ``x`` with every method in ``methods``, sharing one forward pass and its
    backward passes, with the model in eval mode for the call."""
    x = prepare(model, x)
    layers = [m.layers_for(x) for m in methods]
    union = list(dict.fromkeys(name for mine in layers for name in mine))
    with eval_mode(model):
        p = shared_pass(
            model, x, target, union,
            layer_gradients=any(m.wants_layer_gradients for m in methods),
            input_gradients=any(m.wants_input_gradients for m in methods),
            guided=any(m.wants_guided_gradients for m in methods),
        )
        return [m.explain(p, names) for m, names in zip(methods, layers, strict=True)]


def forward_batches(
    model: nn.Module,
    total: int,
    make: Callable[[int, int], Tensor],
    batch_size: int,
    progress: bool | None,
    description: str,
) -> Tensor:
    """Logits of ``total`` modified inputs, built ``batch_size`` at a time by
    ``make(start, stop)`` and run without gradients; ``(total, classes)``."""
    out: list[Tensor] = []
    with torch.no_grad():
        for start, stop in batches(chunks(total, batch_size), description, progress):
            out.append(scores(model(make(start, stop))))
    return torch.cat(out)


def layer_modules(model: nn.Module, layer: str | Sequence[str] | None) -> tuple[str, ...]:
    """Validate ``layer`` (one dotted name or several); ``None`` gives ``()`` ("pick the default")."""
    if layer is None:
        return ()
    names = (layer,) if isinstance(layer, str) else tuple(layer)
    if not names:
        raise ConfigError("layer=[] names no layer: give a dotted module name such as 'conv2', or None")
    if len(set(names)) != len(names):
        raise ConfigError(f"layer names repeat in {list(names)}; give each once")
    return tuple(resolve_layers(model, names))
