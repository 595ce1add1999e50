"""Receptive fields, checked empirically with gradients.

For an output unit (c, i, j) of a layer, the gradient of that unit with respect to
the input is non-zero exactly on the input pixels it depends on. With positive weights
and positive inputs nothing cancels and no ReLU is dead, so the support of the gradient
(unioned over a batch of random inputs, which moves the max-pool winners around) must
lie inside the computed region and reach each of its borders (clipped to the image).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from _helpers import CONV_PROFILE
from convlens.conv import FieldTable, Geometry, LayerSpec, output_size, receptive_field_stack
from convlens.errors import ConfigError, LayerError
from convlens.inspect.receptive import conv_filter, receptive_field

PROFILE = CONV_PROFILE
STACKS = settings(PROFILE, max_examples=max(10, PROFILE.max_examples // 5))


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """Small tensors: one intra-op thread is faster, and robust on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------ models in plain torch
class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs, batch norm, identity or 1×1 strided shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 5, stride=2, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(4, 4), BasicBlock(4, 4))
        self.layer2 = nn.Sequential(BasicBlock(4, 8, stride=2), BasicBlock(8, 8, dilation=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Functional(nn.Module):
    """Geometry from torch functions in forward: pad, F.max_pool2d, cat of two branches."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(1, 2, 3, padding=2, dilation=2)
        self.c = nn.Conv2d(4, 2, (2, 4), padding="same")
        self.d = nn.ConvTranspose2d(2, 2, 3, padding=1)
        self.e = nn.Conv2d(2, 2, 3, stride=(2, 1))
        self.up = nn.ConvTranspose2d(2, 2, 2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (1, 0, 2, 1))
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        y = F.max_pool2d(y, 2, ceil_mode=True)
        y = self.e(self.d(self.c(y)))
        return self.up(y)


def _positive(model: nn.Module) -> nn.Module:
    """Positive weights, float64, eval: the gradient support is the dependency set."""
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.abs() + 0.05)
    return model


def _supports(model: nn.Module, layer: str, shape: tuple[int, ...], units: list[tuple[int, int]], n: int = 32) -> list[np.ndarray]:
    """For each unit: input pixels where d(layer output at the unit, channel 0)/d(input) ≠ 0
    for any of n random inputs. One forward and backward pass: sample u*n + k serves unit u."""
    gen = torch.Generator().manual_seed(0)
    # log-normal pixels: a single bright pixel can win a max pool even at the border,
    # where windows overlapping the padding sum fewer positive terms
    x = torch.exp(2.5 * torch.randn((len(units) * n, *shape), generator=gen, dtype=torch.float64))
    x.requires_grad_(True)
    module = model.get_submodule(layer)
    got: dict[str, Tensor] = {}
    handle = module.register_forward_hook(lambda m, a, o: got.__setitem__("y", o))
    try:
        model(x)
    finally:
        handle.remove()
    y = got["y"]
    rows = torch.arange(len(units) * n)
    if y.dim() == 4:
        ii = torch.tensor([u[0] for u in units]).repeat_interleave(n)
        jj = torch.tensor([u[1] for u in units]).repeat_interleave(n)
        picked = y[rows, 0, ii, jj]
    else:
        picked = y[:, 0]
    picked.sum().backward()
    assert x.grad is not None
    nonzero = (x.grad != 0).any(dim=1).reshape(len(units), n, *shape[-2:]).any(dim=1)
    return list(nonzero.numpy())


def _inside(row: Any, i: int, j: int, hw: tuple[int, ...]) -> bool:
    (u0, u1), (v0, v1) = row.region(i, j)
    return u0 >= 0 and v0 >= 0 and u1 < hw[0] and v1 < hw[1]


def _check_units(
    model: nn.Module, table: FieldTable, shape: tuple[int, ...], names: list[str] | None = None, n: int = 32
) -> tuple[int, int]:
    """Gradient check of a few units of every module row.

    Every unit: the gradient lies inside the computed region (clipped to the image).
    Units whose whole region lies inside the image (and exact rows): the gradient also
    reaches each of the region's four borders. (A region that extends past the image
    may also cover pixels that the unit reaches only through an intermediate layer's
    zero padding, so its borders need not be reached.) Returns (units, strict units).
    """
    hw = shape[-2:]
    checked = strict = 0
    module_names = {n for n, _ in model.named_modules()}
    for row in table:
        if row.name not in module_names or (names is not None and row.name not in names):
            continue
        h, w = (row.output_shape[1], row.output_shape[2]) if len(row.output_shape) == 3 else (1, 1)
        units = {(0, 0), (h - 1, w - 1), (h // 2, w // 3)}
        interior = [(i, j) for i in range(h) for j in range(w) if _inside(row, i, j, hw)]
        if interior:
            units.add(min(interior, key=lambda u: abs(u[0] - h / 2) + abs(u[1] - w / 2)))
            units.add(interior[-1])
        ordered = sorted(units)
        for (i, j), mask in zip(ordered, _supports(model, row.name, shape, ordered, n), strict=True):
            rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
            (r0, r1), (c0, c1) = row.geometry.clipped(i, j, hw)
            where = f"{row.name} unit ({i}, {j}): region rows {r0}..{r1} cols {c0}..{c1}"
            checked += 1
            if not mask.any():
                assert not _inside(row, i, j, hw), f"{where}: no gradient at all"
                continue
            got = (rows.min(), rows.max(), cols.min(), cols.max())
            assert got[0] >= r0 and got[1] <= r1 and got[2] >= c0 and got[3] <= c1, (
                f"{where}; gradient at rows {got[0]}..{got[1]} cols {got[2]}..{got[3]}"
            )
            if row.exact and _inside(row, i, j, hw):
                assert got == (r0, r1, c0, c1), f"{where}; gradient only at rows {got[0]}..{got[1]} cols {got[2]}..{got[3]}"
                strict += 1
    return checked, strict


# ------------------------------------------------------------------------- tests
def test_seed_cnn_fields_match_gradients_and_published_values() -> None:
    model = _positive(nn.Sequential(
        nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * 7 * 7, 3),
    ))
    table = receptive_field(model, (1, 28, 28))
    # the textbook recursion rf_l = rf_{l-1} + (k-1)·jump_{l-1}: 5, 6, 14, 16
    assert [table[n].rf for n in ("0", "2", "3", "5")] == [(5, 5), (6, 6), (14, 14), (16, 16)]
    assert [table[n].jump for n in ("0", "2", "3", "5")] == [(1, 1), (2, 2), (2, 2), (4, 4)]
    assert table["7"].jump == (0, 0) and table["7"].rf == (28, 28) and table["7"].exact
    assert not table["6"].exact  # flatten: each value sees one position's region, shown as the whole image
    assert _check_units(model, table, (1, 28, 28))[1] >= 12


def test_strided_dilated_pooled_stack() -> None:
    model = _positive(nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(2, 2, (3, 5), stride=(2, 1), padding=(1, 0)),
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.Conv2d(2, 2, 2, dilation=3),
        nn.MaxPool2d(2, stride=1, dilation=2, padding=1),
        nn.Conv2d(2, 2, 1, stride=2),
    ))
    table = receptive_field(model, (1, 30, 27))
    assert _check_units(model, table, (1, 30, 27))[1] >= 12


def test_resnet_style_model() -> None:
    model = _positive(TinyResNet())
    table = receptive_field(model, (1, 120, 120))
    # block outputs take the union of the main branch and the shortcut
    assert table["layer2.0"].rf == table["layer2.0.conv2"].rf
    assert table["layer2.0.downsample"].rf < table["layer2.0"].rf
    assert table["avgpool"].jump == (0, 0) and table["avgpool"].exact
    names = ["conv1", "maxpool", "layer1.0", "layer1", "layer2.0.downsample", "layer2.0.conv1", "layer2.0", "layer2.1.conv1", "layer2", "fc"]
    assert _check_units(model, table, (1, 120, 120), names, n=48)[1] >= 18


def test_functional_calls_in_forward() -> None:
    model = _positive(Functional())
    table = receptive_field(model, (1, 21, 18))
    assert "max_pool2d()" in table.names and "pad()" in table.names
    assert table["max_pool2d()"].type == "F.max_pool2d"
    # strided transposed convolution: a safe upper bound (the whole image)
    assert table["up"].jump == (0, 0) and not table["up"].exact
    assert _check_units(model, table, (1, 21, 18))[1] >= 8


@st.composite
def stacks(draw: st.DrawFn) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    layers = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "maxpool", "avgpool"]))
        k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        spec: dict[str, Any] = {"kind": kind, "kernel_size": k, "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3)))}
        if kind == "conv":
            spec["padding"] = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
            spec["dilation"] = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        else:
            spec["padding"] = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
            spec["ceil_mode"] = draw(st.booleans())
            if kind == "maxpool":
                spec["dilation"] = (draw(st.integers(1, 2)), 1)
        layers.append(spec)
    return layers, (draw(st.integers(6, 24)), draw(st.integers(6, 24)))


def _empty_max_window(size: tuple[int, ...], spec: dict[str, Any]) -> bool:
    """Whether some window of this max pool has all its taps outside its input."""
    out = output_size(size, spec["kernel_size"], spec["stride"], spec["padding"], spec["dilation"],
                      kind="pool", ceil_mode=spec["ceil_mode"])
    for axis in (0, 1):
        k, s, p, d = (spec[key][axis] for key in ("kernel_size", "stride", "padding", "dilation"))
        for o in range(out[axis]):
            if not any(0 <= o * s - p + t * d < size[axis] for t in range(k)):
                return True
    return False


def _torch_stack(layers: list[dict[str, Any]]) -> nn.Module:
    mods: list[nn.Module] = []
    for spec in layers:
        if spec["kind"] == "conv":
            mods.append(nn.Conv2d(1, 1, spec["kernel_size"], spec["stride"], spec["padding"], spec["dilation"]))
        elif spec["kind"] == "maxpool":
            mods.append(nn.MaxPool2d(spec["kernel_size"], spec["stride"], spec["padding"], spec["dilation"], ceil_mode=spec["ceil_mode"]))
        else:
            mods.append(nn.AvgPool2d(spec["kernel_size"], spec["stride"], spec["padding"], ceil_mode=spec["ceil_mode"]))
    return nn.Sequential(*mods)


@STACKS
@given(stacks())
def test_random_stacks_gradients_and_arithmetic_agree(case: tuple[list[dict[str, Any]], tuple[int, int]]) -> None:
    layers, hw = case
    try:
        numpy_table = receptive_field_stack(layers, hw)
    except ConfigError:
        assume(False)
        return
    # PyTorch bug: a dilated max-pool window with no tap inside its input yields -inf and
    # an index past the end of the input; the backward pass then writes out of bounds
    # (wrong gradients, then heap corruption). Such stacks cannot be checked by gradients.
    sizes = [hw] + [row.output_shape[-2:] for row in numpy_table]
    assume(not any(
        _empty_max_window(sizes[n], spec) for n, spec in enumerate(layers) if spec["kind"] == "maxpool"
    ))
    model = _positive(_torch_stack(layers))
    table = receptive_field(model, (1, *hw))
    for ours, walked in zip(numpy_table, table, strict=True):
        assert (ours.rf, ours.jump, ours.lo, ours.hi, ours.units) == (walked.rf, walked.jump, walked.lo, walked.hi, walked.units)
        assert ours.output_shape == walked.output_shape[1:]
    # stacks of max pools route each sample's gradient to one pixel per window, so
    # reaching a border pixel needs many samples: 256 make a miss < 1e-9 likely
    assert _check_units(model, table, (1, *hw), [table[len(table) - 1].name], n=256)[0] >= 1


def test_model_is_left_as_it_was_even_when_forward_fails() -> None:
    model = TinyResNet().train()
    model.layer1.eval()
    before_flags = {n: m.training for n, m in model.named_modules()}
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    receptive_field(model, (1, 32, 32))
    with pytest.raises(ConfigError, match="failed on an input of shape"):
        receptive_field(model, (3, 32, 32))  # wrong channel count: the forward raises
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert torch._C._len_torch_function_stack() == 0
    assert {n: m.training for n, m in model.named_modules()} == before_flags
    for k, v in model.state_dict().items():  # batch-norm statistics untouched
        assert torch.equal(v, before_state[k])
    assert all(p.grad is None for p in model.parameters())


def test_macs_and_params_by_formula() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, groups=1), nn.Conv2d(8, 8, 3, stride=2, groups=4), nn.Flatten(), nn.Linear(8 * 15 * 15, 5))
    table = receptive_field(model, (3, 32, 32))
    assert table["0"].macs == 8 * 32 * 32 * 3 * 9 and table["0"].params == 8 * 3 * 9 + 8
    assert table["1"].macs == 8 * 15 * 15 * 2 * 9 and table["1"].params == 8 * 2 * 9 + 8
    assert table["3"].macs == 5 * 8 * 15 * 15
    assert table.total_macs == sum(table[n].macs for n in ("0", "1", "3"))
    text = str(table)
    assert "Conv2d" in text and f"{table.total_macs:,} MACs" in text


def test_stack_arithmetic_by_hand() -> None:
    g = Geometry.identity().conv(3).conv(3, stride=2, padding=1)
    # unit 0 of the second layer sees input rows -1..3; unit 2 sees rows 3..7
    assert g.region(2, 0) == ((3, 7), (-1, 3)) and g.rf == (5, 5) and g.start == (1.0, 1.0)
    t = receptive_field_stack([LayerSpec("conv", 3, in_channels=1, out_channels=4), LayerSpec("maxpool", 2, stride=None)], 8, in_channels=1)
    assert t["0"].output_shape == (4, 6, 6) and t["1"].output_shape == (4, 3, 3)
    assert t["0"].params == 4 * 9 + 4 and t["0"].macs == 4 * 36 * 9
    assert output_size(8, 3) == (6, 6)
    with pytest.raises(LayerError, match="unknown layer 'conv3'"):
        t["conv3"]


def test_conv_filter_replays_the_layer() -> None:
    from convlens.conv import conv2d

    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="reflect")).double()
    f = conv_filter(model, "0:1")
    x = np.random.default_rng(0).standard_normal((1, 2, 9, 9))
    with torch.no_grad():
        ref = model(torch.from_numpy(x))[0, 1].numpy()
    ours = conv2d(x, f.weight[None], [f.bias], f.stride, f.padding, f.dilation, padding_mode=f.padding_mode)[0, 0]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    with pytest.raises(LayerError, match="unknown layer 'conv1': valid names are 0"):
        conv_filter(model, "conv1:1")
    with pytest.raises(ConfigError, match=r"channels 0\.\.2"):
        conv_filter(model, "0:3")
    with pytest.raises(ConfigError, match="layer:channel"):
        conv_filter(model, "0")


def test_elementwise_max_and_global_gating() -> None:
    """max(a, b) of two branches takes the union; multiplying by a global mean (as in a
    squeeze-and-excitation block) makes every unit depend on the whole image."""

    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3, padding=1)
            self.b = nn.Conv2d(1, 2, 5, padding=2)
            self.c = nn.Conv2d(2, 2, 1)

        def forward(self, x: Tensor) -> Tensor:
            y = self.c(torch.max(self.a(x), self.b(x)))
            return self.c(y * torch.sigmoid(y.mean(dim=(2, 3), keepdim=True)))

    table = receptive_field(Gated(), (1, 16, 16))
    assert (table["c"].rf, table["c"].jump, table["c"].lo) == ((5, 5), (1, 1), (-2, -2))
    assert (table["c#2"].rf, table["c#2"].jump, table["c#2"].exact) == ((16, 16), (0, 0), True)
    x = torch.rand(1, 1, 16, 16, requires_grad=True)
    Gated()(x)[0, 0, 0, 0].backward()
    assert x.grad is not None and bool((x.grad != 0).all())  # the corner unit depends on every pixel


# ------------------------------------------- regions at the border, checked unit by unit
def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not rows.size:
        return None
    return (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max()))


def _assert_regions_exact(model: nn.Module, shape: tuple[int, ...], layer: str, units: list[tuple[int, int]], n: int = 32) -> FieldTable:
    """Every unit of ``layer`` (border units included): a row flagged exact has the region,
    clipped to the image, that the gradient support fills: the same first and last rows
    and columns. A row not flagged exact must still contain the support."""
    table = receptive_field(model, shape)
    row = table[layer]
    hw = shape[-2:]
    for (i, j), mask in zip(units, _supports(model, layer, shape, units, n), strict=True):
        (r0, r1), (c0, c1) = row.geometry.clipped(i, j, hw)
        got = _bbox(mask)
        where = f"{layer} unit ({i}, {j}): region rows {r0}..{r1} cols {c0}..{c1}, gradient {got}"
        if got is None:
            assert r0 > r1 or c0 > c1 or not row.exact, where
            continue
        assert r0 <= got[0] and got[1] <= r1 and c0 <= got[2] and got[3] <= c1, where
        if row.exact:
            assert got == (r0, r1, c0, c1), where
    return table


def test_border_unit_behind_pixels_a_floor_dropped() -> None:
    """AlexNet-v2 (TF-slim layout) at 224: conv1 (11, stride 4, no padding) reads rows up
    to 222 only, so row 223 reaches no unit; 'same' convolutions later pad the map, and a
    border unit's nominal window then covers input rows that no unit of the map saw."""
    c = 2
    model = _positive(nn.Sequential(
        nn.Conv2d(1, c, 11, stride=4), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(c, c, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    ))
    table = _assert_regions_exact(model, (1, 224, 224), "12", [(3, 3), (4, 4), (0, 0), (2, 2)], n=64)
    # the published values (Araujo, Norris and Sim, Distill 2019): size 195, jump 32
    assert table["12"].rf == (195, 195) and table["12"].jump == (32, 32)
    assert table["12"].geometry.clipped(3, 3, (224, 224))[0] == (32, 218)


def test_corner_unit_whose_dilated_taps_land_in_padding() -> None:
    """Two padding='same' convolutions with even kernels, the second dilated: PyTorch pads
    less at the top than at the bottom, and the corner unit's first tap reads padding."""
    model = _positive(nn.Sequential(
        nn.Conv2d(1, 1, 2, padding="same"),
        nn.Conv2d(1, 1, 2, padding="same", dilation=3),
    ))
    units = [(0, 0), (1, 1), (0, 5), (5, 0), (4, 4), (9, 9), (8, 8)]
    table = _assert_regions_exact(model, (1, 10, 10), "1", units, n=1)
    assert table["1"].rf == (5, 5)  # the nominal window is unchanged


def test_channel_slice_of_a_concatenation() -> None:
    """cat(1×1 branch, 9×9 branch)[:, :1] keeps only the 1×1 branch: its units see one pixel."""

    class Sliced(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 1, 1)
            self.b = nn.Conv2d(1, 1, 9, padding=4)
            self.head = nn.Conv2d(1, 1, 1)
            self.both = nn.Conv2d(2, 1, 1)

        def forward(self, x: Tensor) -> Tensor:
            y = torch.cat([self.a(x), self.b(x)], dim=1)
            return self.head(y[:, :1]) + self.both(y).mean() * 0 + self.head(y[:, 1:])

    model = _positive(Sliced())
    table = receptive_field(model, (1, 16, 16))
    assert table["head"].rf == (1, 1) and table["head"].exact
    assert table["head#2"].rf == (9, 9) and table["both"].rf == (9, 9)
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    y = torch.cat([model.a(x), model.b(x)], dim=1)
    model.head(y[:, :1])[0, 0, 8, 8].backward()
    assert x.grad is not None and int((x.grad != 0).sum()) == 1


def test_padding_modes_see_the_pixels_they_copy() -> None:
    """reflect, replicate and circular padding copy pixels into the border: a border unit
    depends on them, and its region says so (zero padding reads none)."""
    for mode in ("zeros", "reflect", "replicate", "circular"):
        model = _positive(nn.Sequential(
            nn.Conv2d(1, 1, 3, padding=2, padding_mode=mode),
            nn.Conv2d(1, 1, 2, stride=2, padding=1, padding_mode=mode),
        ))
        units = [(0, 0), (1, 2), (4, 4), (5, 5), (0, 5)]
        table = _assert_regions_exact(model, (1, 8, 8), "1", units, n=1)
        assert table["1"].exact, mode


def test_branches_keep_their_channels_through_pools_groups_and_splits() -> None:
    """An Inception-style concatenation keeps one geometry per channel through ReLU,
    pooling and padding; a grouped convolution and a split read only their own channels;
    an ungrouped convolution combines them all."""

    class Pick(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x[:, :1]

    class Branches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 2, 1)
            self.b = nn.Conv2d(1, 2, 5, padding=2)
            self.pool = nn.MaxPool2d(3, stride=1, padding=1)
            self.grouped = nn.Conv2d(4, 2, 1, groups=2)
            self.first = nn.Conv2d(2, 1, 1)
            self.mixed = nn.Conv2d(4, 1, 1)
            self.pick = Pick()

        def forward(self, x: Tensor) -> Tensor:
            y = self.pool(torch.relu(torch.cat([self.a(x), self.b(x)], dim=1)))
            g = self.grouped(y)
            head, _ = torch.split(y, 2, dim=1)
            return self.pick(g) + self.first(head) + self.mixed(y) + F.pad(y, (1, 1, 1, 1))[:, :1, 1:-1, 1:-1]

    model = _positive(Branches())
    table = receptive_field(model, (1, 12, 12))
    assert table["pool"].rf == (7, 7) and table["pool"].exact  # the union over channels
    assert table["first"].rf == (3, 3) and table["first"].exact
    assert table["mixed"].rf == (7, 7) and table["mixed"].exact
    assert table["grouped"].rf == (7, 7) and table["pick"].rf == (3, 3) and table["pick"].exact
    for layer in ("first", "mixed", "pick"):
        _assert_regions_exact(model, (1, 12, 12), layer, [(0, 0), (5, 6), (11, 11)], n=48)
