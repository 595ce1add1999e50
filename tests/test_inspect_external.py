"""load_model('module:factory', weights): a user's model and a state dict, safely."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from convlens.errors import ConvlensError
from convlens.models.external import ModelLoadError, load_model, load_state_dict_file

NETS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3)
            self.bn = nn.BatchNorm2d(3)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))

    def make():
        return Net()

    def needs_args(width):
        return Net()

    def not_a_model():
        return 42

    def broken():
        raise RuntimeError("out of cheese")

    class Zoo:
        @staticmethod
        def small():
            return Net()

    NUMBER = 3
    """
)


@pytest.fixture
def nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    name = f"usernets_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(NETS)
    monkeypatch.chdir(tmp_path)  # found like `python -m` finds it: from the working directory
    yield tmp_path / name  # type: ignore[misc]
    sys.modules.pop(name, None)


def _trained(spec: str) -> torch.nn.Module:
    model = load_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model.bn.running_mean.add_(0.5)  # type: ignore[operator]
    return model


def test_factory_and_torch_state_dict(nets: Path) -> None:
    spec = f"{nets.name}:make"
    src = _trained(spec)
    torch.save(src.state_dict(), nets.parent / "w.pt")
    model = load_model(spec, nets.parent / "w.pt")
    assert not model.training
    for (k, a), (k2, b) in zip(src.state_dict().items(), model.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    x = torch.randn(2, 1, 6, 6)
    torch.testing.assert_close(model(x), src.eval()(x))


def test_safetensors_and_wrapped_checkpoint_and_nested_factory(nets: Path) -> None:
    spec = f"{nets.name}:Zoo.small"
    src = _trained(spec)
    save_file(src.state_dict(), str(nets.parent / "w.safetensors"))
    torch.save({"epoch": 3, "state_dict": src.state_dict()}, nets.parent / "ckpt.pth")
    for f in ("w.safetensors", "ckpt.pth"):
        model = load_model(spec, nets.parent / f)
        torch.testing.assert_close(model.conv.weight, src.conv.weight)
        torch.testing.assert_close(model.bn.running_mean, src.bn.running_mean)


def test_a_pickled_model_is_refused(nets: Path) -> None:
    src = load_model(f"{nets.name}:make")
    torch.save(src, nets.parent / "whole.pt")  # a full pickle, not a state dict
    with pytest.raises(ModelLoadError, match="weights_only=True"):
        load_model(f"{nets.name}:make", nets.parent / "whole.pt")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no colon here", "not 'package.module:factory'"),
        ("a.b:c:d", "not 'package.module:factory'"),
        ("__import__('os'):system", "not 'package.module:factory'"),
        ("surely_not_a_module_xyz:make", "no module named 'surely_not_a_module_xyz'"),
        ("{nets}:mkae", "has no attribute 'mkae'.*make"),
        ("{nets}:NUMBER", "not a class or function"),
        ("{nets}:not_a_model", "returned int 42, not a torch.nn.Module"),
        ("{nets}:needs_args", "no required arguments"),
        ("{nets}:broken", "out of cheese"),
    ],
)
def test_bad_specs(nets: Path, spec: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message) as e:
        load_model(spec.format(nets=nets.name))
    assert isinstance(e.value, ConvlensError) and isinstance(e.value, ValueError)
    assert "\n" not in str(e.value)


def test_mismatched_state_dicts(nets: Path) -> None:
    spec = f"{nets.name}:make"
    state = load_model(spec).state_dict()
    extra = dict(state, **{"head.weight": torch.zeros(2)})
    del extra["fc.bias"]
    torch.save(extra, nets.parent / "keys.pt")
    with pytest.raises(ModelLoadError, match=r"missing 1: fc\.bias; unexpected 1: head\.weight"):
        load_model(spec, nets.parent / "keys.pt")
    wrong = dict(state, **{"fc.weight": torch.zeros(5, 3)})
    torch.save(wrong, nets.parent / "shape.pt")
    with pytest.raises(ModelLoadError, match=r"shapes differ for fc\.weight \(5, 3\) vs \(2, 3\)"):
        load_model(spec, nets.parent / "shape.pt")


def test_state_dict_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_state_dict_file(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match="cannot be read as a state dict"):
        load_state_dict_file(tmp_path / "junk.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        load_state_dict_file(tmp_path / "junk.safetensors")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ModelLoadError, match="holds a list, not a state dict"):
        load_state_dict_file(tmp_path / "list.pt")
