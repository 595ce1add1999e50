"""Where the fixed cost of a small call goes: capture's per-block steps, and Grad-CAM's steps.

The seed CNN at batch 1, where the fixed costs matter most (see benchmarks/README.md). Each
step is timed with ``time.perf_counter`` around it, inside the real sequence of calls (so
that caches are as cold as they are in use), over many repetitions; medians in µs.

* capture: ``Capture(model, 3 layers)``, ``__enter__``, the forward pass with the taps in
  place, ``__exit__``, dropping the capture, and a plain forward pass for comparison; then
  the same for a bare wrapper with none of capture's guarantees (:class:`Bare`), the floor
  of any capture written in Python.
* Grad-CAM: the steps of ``convlens.explain.cam(model, x, layer="conv2", target=3)``
  written out: building the method, checking the input, eval mode, the capture, the
  forward pass, reading the layer and planning the target, the backward pass (one call of
  the autograd engine), the Grad-CAM arithmetic, and the lower bound's passes for
  comparison (the forward pass written out by hand, then ``torch.autograd.grad``).

Run:  python benchmarks/parts.py [--threads N] [--reps N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from convlens.explain.api import make_method
from convlens.explain.base import _scores, _spatial, prepare
from convlens.explain.targets import plan_targets
from convlens.inspect._state import eval_mode
from convlens.inspect.capture import Capture, autograd_grad
from zoo import SeedCNN, seeded

Clock = Callable[[], float]


Steps = tuple[tuple[str, float], ...]


def medians(reps: int, one: Callable[[], Steps]) -> dict[str, float]:
    """Run ``one`` (one repetition, returning ``(step, seconds)`` pairs) ``reps`` times;
    the median of each step in µs."""
    times: dict[str, list[float]] = {}
    for _ in range(reps):
        for k, v in one():
            times.setdefault(k, []).append(v * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


SEED_LAYERS = ["conv1", "relu1", "conv2"]


def capture_steps(reps: int) -> dict[str, float]:
    model = seeded(SeedCNN())
    x = torch.randn(1, 1, 28, 28)
    pc = time.perf_counter

    def one() -> Steps:
        t0 = pc()
        cap = Capture(model, SEED_LAYERS)
        t1 = pc()
        cap.__enter__()
        t2 = pc()
        model(x)
        t3 = pc()
        cap.__exit__(None, None, None)
        t4 = pc()
        del cap
        t5 = pc()
        model(x)
        t6 = pc()
        return (("create", t1 - t0), ("enter", t2 - t1), ("forward, tapped", t3 - t2),
                ("exit", t4 - t3), ("drop", t5 - t4), ("forward, plain", t6 - t5))

    with torch.no_grad():
        return medians(reps, one)


class Bare:
    """For comparison only: the least a capture block can do, with none of convlens's
    guarantees (no version checks, no hook fallback, no shared-module lists, no error
    handling, no restoring of a user's own ``forward``): resolve three names, wrap three
    ``forward``s, keep each output in a dict, delete the wrappers."""

    __slots__ = ("kept", "modules", "owners")

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        self.modules = [(n, model.get_submodule(n)) for n in names]
        self.kept: dict[str, torch.Tensor] = {}

    def __enter__(self) -> Bare:
        kept, owners = self.kept, []
        for name, module in self.modules:
            own, forward = module.__dict__, module.forward

            def tapped(*args: object, forward: Callable[..., torch.Tensor] = forward, name: str = name) -> torch.Tensor:
                out = forward(*args)
                kept[name] = out
                return out

            own["forward"] = tapped
            owners.append(own)
        self.owners = owners
        return self

    def __exit__(self, *exc: object) -> None:
        for own in self.owners:
            del own["forward"]


def bare_steps(reps: int) -> dict[str, float]:
    """The same steps as :func:`capture_steps` for :class:`Bare`."""
    model = seeded(SeedCNN())
    x = torch.randn(1, 1, 28, 28)
    pc = time.perf_counter

    def one() -> Steps:
        t0 = pc()
        bare = Bare(model, SEED_LAYERS)
        bare.__enter__()
        t1 = pc()
        model(x)
        t2 = pc()
        bare.__exit__(None, None, None)
        del bare
        t3 = pc()
        model(x)
        t4 = pc()
        return (("block (create, enter, exit, drop)", (t1 - t0) + (t3 - t2)),
                ("forward, tapped", t2 - t1), ("forward, plain", t4 - t3))

    with torch.no_grad():
        return medians(reps, one)


def gradcam_steps(reps: int) -> dict[str, float]:
    model = seeded(SeedCNN())
    x = torch.randn(1, 1, 28, 28)
    m = model
    pc = time.perf_counter

    def one() -> Steps:
        t0 = pc()
        method = make_method("gradcam", model, "conv2")
        t1 = pc()
        xx, training = prepare(model, x)
        modules = method.layers_for(xx)
        t2 = pc()
        mode = eval_mode(model, training)
        mode.__enter__()
        cap = Capture(model, modules, gradients=True, backward_hooks=False, graph_from_layers=True)
        cap.__enter__()
        t3 = pc()
        logits = model(xx)
        t4 = pc()
        cap.__exit__(None, None, None)
        t5 = pc()
        with torch.enable_grad():
            logits = _scores(logits)
            values = [_spatial("conv2", cap["conv2"])]
            plan = plan_targets(3, logits.detach())
            seed, weights = plan.seed(logits, 0)
            t6 = pc()
            grads = autograd_grad((seed,), values, (weights,))
            t7 = pc()
        assert grads[0] is not None
        method._cam(values[0].detach(), grads[0])  # type: ignore[attr-defined]
        t8 = pc()
        mode.__exit__()
        t9 = pc()
        a = m.conv2(m.pool1(m.relu1(m.conv1(x))))
        out = m.fc(torch.flatten(m.pool2(m.relu2(a)), 1))
        t10 = pc()
        torch.autograd.grad(out[:, 3].sum(), a)
        t11 = pc()
        return (("build the method", t1 - t0), ("check the input", t2 - t1),
                ("eval mode, capture set up", t3 - t2), ("forward pass", t4 - t3),
                ("capture closed", t5 - t4), ("read the layer, plan the target", t6 - t5),
                ("backward pass", t7 - t6), ("Grad-CAM arithmetic", t8 - t7),
                ("eval mode restored", t9 - t8), ("lower bound: forward", t10 - t9),
                ("lower bound: backward", t11 - t10))

    return medians(reps, one)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--reps", type=int, default=5000)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.reps} repetitions, µs")
    print("\ncapture, seed-cnn batch 1, 3 layers (conv1, relu1, conv2), under no_grad")
    steps = capture_steps(args.reps)
    for k, v in steps.items():
        print(f"  {k:<34} {v:8.2f}")
    fixed = sum(v for k, v in steps.items() if k in ("create", "enter", "exit", "drop"))
    extra = steps["forward, tapped"] - steps["forward, plain"]
    print(f"  {'per block (create+enter+exit+drop)':<34} {fixed:8.2f}")
    print(f"  {'the taps during the forward pass':<34} {extra:8.2f}")
    print("\nfor comparison, a bare wrapper with none of capture's guarantees (see Bare), same model and layers")
    steps = bare_steps(args.reps)
    for k, v in steps.items():
        print(f"  {k:<34} {v:8.2f}")
    print(f"  {'the taps during the forward pass':<34} {steps['forward, tapped'] - steps['forward, plain']:8.2f}")
    print("\nGrad-CAM, seed-cnn batch 1, conv2, target 3")
    steps = gradcam_steps(args.reps)
    for k, v in steps.items():
        print(f"  {k:<34} {v:8.2f}")
    passes = steps["forward pass"] + steps["backward pass"]
    lower = steps["lower bound: forward"] + steps["lower bound: backward"]
    around = sum(v for k, v in steps.items() if not k.startswith(("lower", "forward pass", "backward pass")))
    print(f"  {'convlens passes / lower bound':<34} {passes / lower:8.3f}")
    print(f"  {'everything around the passes':<34} {around:8.2f}  ({around / lower:.3f} of the lower bound)")


if __name__ == "__main__":
    main()
