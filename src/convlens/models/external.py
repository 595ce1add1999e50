"""Models that aren't ours: ``package.module:factory`` plus a state dict file.

A user's model enters convlens through the Python API (pass the ``nn.Module``) or, on the
command line, as ``--model mypkg.nets:make_net --weights net.pt``. The factory is imported
with :mod:`importlib` and called without arguments (nothing is evaluated from the string);
weights are a state dict read with ``torch.load(weights_only=True)`` or from a
``.safetensors`` file, never an arbitrary pickle.

>>> model = load_model("torch.nn:Identity")
>>> type(model).__name__
'Identity'
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from convlens.errors import ConfigError, ConvlensError
from convlens.models.state import brief, state_dict_mismatch

__all__ = ["ModelLoadError", "load_model", "load_state_dict_file"]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_SPEC = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)$")


class ModelLoadError(ConvlensError, ValueError):
    """A ``module:factory`` spec or a weights file could not give a model."""


# torch's refusal text advises re-running with weights_only=False or allow-listing the
# file's globals "if you trust" it; a refusal of a possibly malicious file must not pass
# that advice on, so only the sentences that say what was found are kept.
_ADVICE = re.compile(
    r"weights_only|trust|arbitrary code|safe_globals|allowlist|documentation|load failed|https?://", re.IGNORECASE
)


def _refusal_reason(exc: BaseException, limit: int = 200) -> str:
    """What ``torch.load`` found in ``exc``'s text, without torch's advice on loading it anyway.

    >>> _refusal_reason(RuntimeError("Weights only load failed. Re-running `torch.load` with "
    ...     "`weights_only` set to `False` will likely succeed.\\n\\nUnsupported global: GLOBAL os.system."))
    'Unsupported global: GLOBAL os.system.'
    """
    sentences = (s.strip() for line in str(exc).splitlines() for s in re.split(r"(?<=[.!?])\s+", line))
    reason = " ".join(s for s in sentences if s and not _ADVICE.search(s)) or type(exc).__name__
    return reason if len(reason) <= limit else reason[: limit - 1].rstrip() + "…"


def load_state_dict_file(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read a state dict (name -> tensor) from ``.safetensors`` or a torch file, safely.

    Torch files are read with ``torch.load(path, weights_only=True)``, which refuses
    anything but tensors and plain containers. A checkpoint that wraps the state dict as
    ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"weights file {str(p)!r} does not exist; pass the path of a state dict (.pt, .pth or .safetensors)")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p), device=str(map_location)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{p.name} is not a readable safetensors file ({exc}); re-save it with safetensors.torch.save_file") from exc
    try:
        obj: Any = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ModelLoadError(
            f"{p.name} cannot be read as a state dict with weights_only=True ({_refusal_reason(exc)}); "
            "save it with torch.save(model.state_dict(), path) or as .safetensors"
        ) from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise ModelLoadError(
            f"{p.name} holds a {type(obj).__name__}, not a state dict of named tensors; "
            "save it with torch.save(model.state_dict(), path)"
        )
    return dict(obj)


def _import_factory(spec: str) -> Any:
    m = _SPEC.match(spec.strip())
    if m is None:
        raise ModelLoadError(
            f"model spec {spec!r} is not 'package.module:factory'; e.g. 'mynets.mnist:make_model'"
        )
    module_name, attr_path = m.groups()
    # like `python -m`, let a module in the working directory be found
    added = False
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
        added = True
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ModelLoadError(
                f"cannot import module {module_name!r} for model spec {spec!r}: no module named "
                f"{exc.name!r}; check the spelling, or run from the directory that contains it"
            ) from exc
        raise ModelLoadError(f"importing {module_name!r} failed: {exc}; install what it needs") from exc
    except Exception as exc:
        raise ModelLoadError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(os.getcwd())
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))
            raise ModelLoadError(
                f"{module_name!r} has no attribute {attr_path!r} (model spec {spec!r}); "
                f"it defines {brief(public, 8) or 'nothing public'}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelLoadError(f"{spec!r} is a {type(obj).__name__}, not a class or function that makes a model")
    return obj


def load_model(
    spec: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Build a model from ``"package.module:factory"`` and load a state dict into it.

    The factory (a class or function) is called without arguments and must return an
    ``nn.Module``. ``weights`` is a state dict file (see :func:`load_state_dict_file`); it
    must match the model's parameter and buffer names and shapes exactly. The model is
    returned in eval mode on ``map_location``.
    """
    factory = _import_factory(spec)
    try:
        model = factory()
    except TypeError as exc:
        raise ModelLoadError(f"calling {spec!r}() failed: {exc}; the factory must take no required arguments") from exc
    except ConvlensError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"calling {spec!r}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{spec!r}() returned {type(model).__name__} {repr(model)[:40]}, not a torch.nn.Module")
    if weights is not None:
        state = load_state_dict_file(weights, map_location=map_location)
        problem = state_dict_mismatch(model.state_dict(), state)
        if problem is not None:
            raise ModelLoadError(
                f"{Path(weights).name} does not fit {spec!r}: {problem}; "
                "use the weights saved from this model's state_dict()"
            )
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"{Path(weights).name} could not be loaded into {spec!r}: {exc}") from exc
    try:
        model = model.to(map_location)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"cannot move the model to {map_location!r}: {exc}") from exc
    return model.eval()
