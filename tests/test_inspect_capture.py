"""convlens.capture against manual forward passes and torch.autograd.grad."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convlens
from convlens.errors import ConvlensError, LayerError
from convlens.inspect import CaptureError, capture, capture_once
from zoo import (
    FunctionalCNN,
    InplaceCNN,
    ResNet18,
    ScriptableCNN,
    SeedCNN,
    SharedCNN,
    assert_same_state,
    model_state,
    nested_sequential,
    seeded,
)


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _all_hooks(model: nn.Module) -> int:
    """Hooks and instance-level ``forward`` wrappers (how capture taps most modules)."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        + ("forward" in m.__dict__)
        for m in model.modules()
    )


def test_top_level_name_is_the_same_function() -> None:
    assert convlens.capture is capture


# --- values -------------------------------------------------------------------------------------


def test_seed_cnn_values_equal_a_manual_forward() -> None:
    m = seeded(SeedCNN())
    x = _x(3, 1, 28, 28)
    with capture(m, ["conv1", "relu1", "pool1", "conv2", "fc"]) as cap:
        out = m(x)
    with torch.no_grad():
        c1 = F.conv2d(x, m.conv1.weight, m.conv1.bias, padding=2)
        r1 = torch.clamp(c1, min=0)
        p1 = F.max_pool2d(r1, 2)
        c2 = F.conv2d(p1, m.conv2.weight, m.conv2.bias, padding=2)
        fc = F.linear(F.max_pool2d(c2.clamp(min=0), 2).flatten(1), m.fc.weight, m.fc.bias)
    torch.testing.assert_close(cap["conv1"], c1)
    torch.testing.assert_close(cap["relu1"], r1)
    torch.testing.assert_close(cap["pool1"], p1)
    torch.testing.assert_close(cap["conv2"], c2)
    torch.testing.assert_close(cap["fc"], fc)
    torch.testing.assert_close(out.detach(), fc)
    assert list(cap) == ["conv1", "relu1", "pool1", "conv2", "fc"]
    for name in cap:
        assert not cap[name].requires_grad  # type: ignore[union-attr]
        assert cap[name]._base is None  # type: ignore[union-attr]  # a copy, not a view


@pytest.mark.parametrize("mode", [torch.enable_grad, torch.no_grad, torch.inference_mode])
def test_inplace_relu_does_not_corrupt_the_conv_output(mode: type) -> None:
    m = seeded(InplaceCNN())
    x = _x(2, 1, 9, 9)
    for _ in range(3):  # the first pass copies and learns; later passes too must be right
        with mode(), capture(m, ["conv1", "relu1", "conv2"]) as cap:
            m(x)
        assert not cap["conv1"].requires_grad  # type: ignore[union-attr]
    c1 = F.conv2d(x, m.conv1.weight, m.conv1.bias, padding=1).detach()
    assert (c1 < 0).any()  # otherwise the test could not fail
    torch.testing.assert_close(cap["conv1"], c1)
    torch.testing.assert_close(cap["relu1"], c1.clamp(min=0))
    c2 = F.conv2d(c1.clamp(min=0), m.conv2.weight, m.conv2.bias, padding=1).detach()
    torch.testing.assert_close(cap["conv2"], c2)


def test_inference_mode_outputs_changed_later_keep_their_values() -> None:
    m = seeded(InplaceCNN())
    x = _x(2, 1, 9, 9)
    for _ in range(2):
        with torch.no_grad(), capture(m, ["fc"]) as cap:
            m(x)
    with torch.inference_mode(), capture(m, ["fc"]) as cap:
        out = m(x)
        out.add_(1)  # allowed on inference tensors inside inference_mode
    assert cap["fc"] is not out  # a copy, which kept the values the layer produced
    torch.testing.assert_close(cap["fc"], out - 1)


def test_shared_module_yields_one_tensor_per_call() -> None:
    m = seeded(SharedCNN())
    x = _x(2, 1, 8, 8)
    with capture(m, ["block", "block.0", "stem"]) as cap:
        m(x)
    with torch.no_grad():
        s = m.stem(x)
        b0 = m.block[0](s)
        b1 = m.block(s)
        b2 = m.block[0](b1)
    assert isinstance(cap["block.0"], list) and len(cap["block.0"]) == 2
    torch.testing.assert_close(cap["block.0"][0], b0)
    torch.testing.assert_close(cap["block.0"][1], b2)
    torch.testing.assert_close(cap["block"][1], b2.clamp(min=0))  # type: ignore[index]
    assert isinstance(cap["stem"], torch.Tensor)
    assert len(cap.calls("stem")) == 1


def test_functional_activations_and_inputs() -> None:
    m = seeded(FunctionalCNN())
    x = _x(2, 1, 8, 8)
    with capture(m, ["conv2", "head"], inputs=True) as cap:
        m(x)
    with torch.no_grad():
        p = F.max_pool2d(F.relu(m.conv1(x)), 2)
        head_in = torch.tanh(m.conv2(p)).amax(dim=(2, 3))
    torch.testing.assert_close(cap["conv2"], p)  # the input of conv2 is the functional pool
    torch.testing.assert_close(cap["head"], head_in)


def test_nested_sequential_dotted_names() -> None:
    m = seeded(nested_sequential())  # type: ignore[arg-type]
    x = _x(2, 1, 8, 8)
    with capture(m, ["0.2.0.conv", "0.2.0.act", "0.2"]) as cap:
        m(x)
    with torch.no_grad():
        h = m[0][1](m[0][0](x))
        c = m[0][2][0].conv(h)
    torch.testing.assert_close(cap["0.2.0.conv"], c)
    torch.testing.assert_close(cap["0.2.0.act"], c.clamp(min=0))
    torch.testing.assert_close(cap["0.2"], F.max_pool2d(c.clamp(min=0), 2))


def test_plain_torch_resnet18_with_inplace_residual_add() -> None:
    m = seeded(ResNet18(num_classes=7))
    x = _x(2, 3, 64, 64)
    for _ in range(2):
        with capture(m, ["layer1.0.bn2", "layer1.0", "layer1.0.relu", "layer4", "fc"]) as cap:
            out = m(x)
    b = m.layer1[0]
    with torch.no_grad():
        stem = m.maxpool(F.relu(m.bn1(m.conv1(x))))
        a = F.relu(b.bn1(b.conv1(stem)))
        bn2 = b.bn2(b.conv2(a))
        block = F.relu(bn2 + stem)
        h = block
        for layer in [m.layer1[1], m.layer2, m.layer3, m.layer4]:
            h = layer(h)
    # bn2's output is later modified by `out += identity` and by the in-place ReLU
    torch.testing.assert_close(cap["layer1.0.bn2"], bn2)
    torch.testing.assert_close(cap["layer1.0"], block)
    relu_calls = cap["layer1.0.relu"]  # the block's ReLU module is used twice
    assert isinstance(relu_calls, list) and len(relu_calls) == 2
    torch.testing.assert_close(relu_calls[0], a)
    torch.testing.assert_close(relu_calls[1], block)
    torch.testing.assert_close(cap["layer4"], h)
    torch.testing.assert_close(cap["fc"], out.detach())
    assert cap["layer4"].shape == (2, 512, 2, 2)  # type: ignore[union-attr]


# --- gradients ----------------------------------------------------------------------------------


def test_gradients_equal_autograd_grad() -> None:
    m = seeded(SeedCNN())
    x = _x(3, 1, 28, 28)
    with capture(m, ["conv1", "relu2"], gradients=True) as cap:
        out = m(x)
        out[:, 3].sum().backward()
    m.zero_grad(set_to_none=True)
    # oracle: the same computation, differentiated by torch.autograd.grad
    c1 = m.conv1(x)
    r2 = m.relu2(m.conv2(m.pool1(m.relu1(c1))))
    y = m.fc(m.pool2(r2).flatten(1))
    g_c1, g_r2 = torch.autograd.grad(y[:, 3].sum(), [c1, r2])
    torch.testing.assert_close(cap.gradients["conv1"], g_c1)
    torch.testing.assert_close(cap.gradients["relu2"], g_r2)
    torch.testing.assert_close(cap["conv1"].detach(), c1.detach())  # type: ignore[union-attr]
    assert cap["conv1"].requires_grad  # type: ignore[union-attr]  # live, not detached


@pytest.mark.parametrize("frozen", [False, True])
def test_gradients_with_inplace_relu_and_frozen_weights(frozen: bool) -> None:
    m = seeded(InplaceCNN())
    m.requires_grad_(not frozen)
    x = _x(2, 1, 9, 9)
    before = model_state(m)
    res = capture_once(m, x, ["conv1", "conv2"], gradients=True, target=[0, 2])
    assert_same_state(before, model_state(m))
    c1 = m.conv1(x.clone()).detach().requires_grad_(True)
    c2 = m.conv2(F.relu(c1))
    y = m.fc(F.relu(c2).mean(dim=(2, 3)))
    g1, g2 = torch.autograd.grad(y[0, 0] + y[1, 2], [c1, c2])
    torch.testing.assert_close(res.gradients["conv1"], g1)
    torch.testing.assert_close(res.gradients["conv2"], g2)
    torch.testing.assert_close(res.activations["conv1"], c1.detach())
    assert (res.activations["conv1"] < 0).any()  # type: ignore[operator]
    torch.testing.assert_close(res.output, y.detach())


def test_gradients_of_a_shared_module_per_call() -> None:
    m = seeded(SharedCNN())
    x = _x(2, 1, 6, 6)
    res = capture(m, "block.0", gradients=True).run(x, target=lambda out: out[:, 1])
    s = m.stem(x)
    a = m.block[0](s)
    b = m.block[0](F.relu(a))
    y = m.head(F.relu(b).mean(dim=(2, 3)))
    ga, gb = torch.autograd.grad(y[:, 1].sum(), [a, b])
    grads = res.gradients["block.0"]
    assert isinstance(grads, list) and len(grads) == 2
    torch.testing.assert_close(grads[0], ga)
    torch.testing.assert_close(grads[1], gb)


def test_input_gradients_of_resnet_block_only_through_that_layer() -> None:
    m = seeded(ResNet18(num_classes=5))
    x = _x(1, 3, 32, 32)
    res = capture_once(m, x, ["layer2.0.conv1"], gradients=True, inputs=True, target=1)
    stem = m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x)))))
    b = m.layer2[0]
    inp = stem.detach().requires_grad_(True)  # gradient through conv1 only, not the shortcut
    a = F.relu(b.bn1(b.conv1(inp)))
    out = F.relu(b.bn2(b.conv2(a)) + b.downsample(stem))
    y = m.fc(m.avgpool(m.layer4(m.layer3(m.layer2[1](out)))).flatten(1))
    (g,) = torch.autograd.grad(y[:, 1].sum(), [inp])
    torch.testing.assert_close(res.gradients["layer2.0.conv1"], g)
    torch.testing.assert_close(res.activations["layer2.0.conv1"], stem.detach())


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_gradients_under_no_grad_are_an_error(mode: type) -> None:
    m = seeded(SeedCNN())
    with pytest.raises(CaptureError, match=r"no_grad|inference_mode"), mode(), capture(m, "conv2", gradients=True):
        m(_x(1, 1, 28, 28))
    assert _all_hooks(m) == 0


def test_missing_backward_is_an_error_not_a_zero() -> None:
    m = seeded(SeedCNN())
    with capture(m, "conv2", gradients=True) as cap:
        m(_x(1, 1, 28, 28))
    with pytest.raises(CaptureError, match="backward"):
        cap.gradients  # noqa: B018


# --- hooks and model state ----------------------------------------------------------------------


def test_no_hook_survives_an_exception_in_the_with_block() -> None:
    m = seeded(ResNet18(num_classes=3))
    with pytest.raises(ZeroDivisionError), capture(m, ["conv1", "layer1.0.relu", "fc"]) as cap:
        assert _all_hooks(m) == 3
        m(_x(1, 3, 32, 32))
        1 / 0  # noqa: B018
    assert _all_hooks(m) == 0
    assert "conv1" in cap  # what was captured before the error stays readable
    cap.remove_hooks()  # removing again is harmless
    cap.remove_hooks()
    assert _all_hooks(m) == 0


def test_no_hook_survives_an_error_inside_the_forward() -> None:
    m = seeded(SeedCNN())
    with pytest.raises(RuntimeError), capture(m, ["conv1", "fc"]):
        m(_x(1, 1, 20, 20))  # wrong size: fc fails after conv1's hook ran
    assert _all_hooks(m) == 0


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("gradients", [False, True])
def test_model_state_is_unchanged(train: bool, gradients: bool) -> None:
    m = seeded(SeedCNN()).train(train)
    m.conv2.weight.requires_grad_(False)
    m.fc.weight.grad = torch.ones_like(m.fc.weight)  # a gradient the user had already
    before = model_state(m)
    x = _x(2, 1, 28, 28)
    if gradients:
        capture_once(m, x, ["conv1", "relu2", "fc"], gradients=True, target=0)
    else:
        capture_once(m, x, ["conv1", "relu2", "fc"])
        with capture(m, ["conv1", "fc"], inputs=True):
            m(x)
    assert_same_state(before, model_state(m))


def test_a_capture_cannot_be_entered_twice_but_can_be_reused() -> None:
    m = seeded(SeedCNN())
    cap = capture(m, "conv1")
    with cap:
        with pytest.raises(CaptureError, match="already active"), cap:
            pass
        m(_x(1, 1, 28, 28, seed=1))
    with cap:  # entering again starts afresh
        m(_x(1, 1, 28, 28, seed=2))
    assert isinstance(cap["conv1"], torch.Tensor)
    torch.testing.assert_close(cap["conv1"], m.conv1(_x(1, 1, 28, 28, seed=2)).detach())
    assert _all_hooks(m) == 0


# --- errors -------------------------------------------------------------------------------------


def test_unknown_layer_lists_the_nearest_names() -> None:
    m = SeedCNN()
    with pytest.raises(LayerError, match=r"unknown layer 'conv3': did you mean 'conv2', 'conv1'\? valid") as e:
        capture(m, ["conv1", "conv3"])
    assert isinstance(e.value, ConvlensError) and isinstance(e.value, KeyError)
    with pytest.raises(LayerError, match=r"did you mean 'layer1\.0\.bn2'"):
        capture(ResNet18(), "layer1.0.bn_2")
    with pytest.raises(ConvlensError, match="no layers"):
        capture(m, [])


def test_layer_that_did_not_run() -> None:
    m = SharedCNN()
    m.unused = nn.ReLU()
    with capture(m, ["stem", "unused"]) as cap:
        m(_x(1, 1, 6, 6))
    assert list(cap) == ["stem"]
    with pytest.raises(CaptureError, match="did not run"):
        cap["unused"]
    with pytest.raises(LayerError):
        cap["head"]


def test_run_target_errors() -> None:
    m = seeded(SeedCNN())
    x = _x(2, 1, 28, 28)
    pred = capture_once(m, x, "conv1", gradients=True)  # no target: the predicted class
    chosen = capture_once(m, x, "conv1", gradients=True, target=pred.output.argmax(1))
    torch.testing.assert_close(pred.gradients["conv1"], chosen.gradients["conv1"])
    with pytest.raises(ConvlensError, match="only used with gradients"):
        capture_once(m, x, "conv1", target=1)
    with pytest.raises(ConvlensError, match="out of range"):
        capture_once(m, x, "conv1", gradients=True, target=10)
    with pytest.raises(ConvlensError, match="one per sample"):
        capture_once(m, x, "conv1", gradients=True, target=[1, 2, 3])
    assert _all_hooks(m) == 0


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_whole_model_is_a_clear_error_and_eager_parents_work() -> None:
    scripted = torch.jit.script(seeded(ScriptableCNN()))
    with pytest.raises(CaptureError, match="TorchScript"):
        capture(scripted, "conv")
    mixed = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Sequential(scripted))
    with pytest.raises(CaptureError, match="TorchScript"):
        capture(mixed, "1.0.conv")
    with pytest.raises(CaptureError, match="TorchScript"):
        capture(mixed, "1.0")
    x = _x(2, 1, 5, 5)
    with capture(mixed, ["0", "1"]) as cap:
        out = mixed(x)
    torch.testing.assert_close(cap["1"], out.detach())
    torch.testing.assert_close(cap["0"], mixed[0](x).detach())


# --- copies only when needed --------------------------------------------------------------------


class _SometimesInplace(nn.Module):
    """Changes the conv output in place only when asked: what a first look cannot predict."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.inplace = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.inplace:
            y.mul_(0)
        return y.sum(dim=(1, 2, 3))


def test_a_model_that_sometimes_changes_a_layer_in_place_is_always_captured_right() -> None:
    m = seeded(_SometimesInplace())
    x = _x(2, 1, 6, 6)
    expected = m.conv(x).detach()
    for inplace in (False, False, True, False, True):
        m.inplace = inplace
        with capture(m, "conv") as cap:
            m(x)
        torch.testing.assert_close(cap["conv"], expected)
        assert _all_hooks(m) == 0


@pytest.mark.parametrize("frozen", [False, True])
def test_gradients_when_the_model_changes_the_layer_output_in_place(frozen: bool) -> None:
    m = seeded(_SometimesInplace())
    m.requires_grad_(not frozen)
    m.inplace = True  # zeroes the conv output in place: the score no longer depends on it
    x = _x(2, 1, 6, 6)
    res = capture_once(m, x, "conv", gradients=True, target=lambda out: out)
    torch.testing.assert_close(res.activations["conv"], m.conv(x).detach())
    torch.testing.assert_close(res.gradients["conv"], torch.zeros_like(m.conv(x)))


def test_the_capture_keeps_its_values_when_the_caller_changes_the_output() -> None:
    m = seeded(SeedCNN())
    x = _x(1, 1, 28, 28)
    with capture(m, "fc") as cap:
        out = m(x)
    expected = out.detach().clone()
    with torch.no_grad():
        out.mul_(0)
    assert cap["fc"].untyped_storage().data_ptr() != out.untyped_storage().data_ptr()  # type: ignore[union-attr]
    torch.testing.assert_close(cap["fc"], expected)


def test_streaming_one_block_many_passes() -> None:
    m = seeded(InplaceCNN())
    cap = capture(m, ["conv1", "conv2"])
    with torch.no_grad(), cap:
        for seed in range(3):
            cap.clear()
            x = _x(2, 1, 7, 7, seed=seed)
            m(x)
            c1 = F.conv2d(x, m.conv1.weight, m.conv1.bias, padding=1)
            torch.testing.assert_close(cap["conv1"], c1)
            torch.testing.assert_close(cap["conv2"], m.conv2(c1.clamp(min=0)))


# --- how modules are tapped ---------------------------------------------------------------------


def test_a_module_with_its_own_forward_hook_is_captured_after_that_hook() -> None:
    m = seeded(SeedCNN())
    x = _x(1, 1, 28, 28)
    handle = m.conv1.register_forward_hook(lambda mod, args, out: out * 2)  # the user's hook
    try:
        with capture(m, ["conv1", "conv2"]) as cap:
            assert len(m.conv1._forward_hooks) == 2  # the user's, then convlens's
            m(x)
        assert list(m.conv1._forward_hooks) == [handle.id]  # only the user's hook is left
    finally:
        handle.remove()
    with torch.no_grad():
        torch.testing.assert_close(cap["conv1"], 2 * F.conv2d(x, m.conv1.weight, m.conv1.bias, padding=2))


def test_a_forward_the_user_replaced_is_captured_and_left_in_place() -> None:
    m = seeded(SeedCNN())
    original = m.conv1.forward
    calls: list[int] = []

    def patched(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return original(x) + 1

    m.conv1.forward = patched  # type: ignore[method-assign]
    with capture(m, "conv1") as cap:
        m(_x(1, 1, 28, 28))
    assert m.conv1.__dict__["forward"] is patched and calls == [1]
    with torch.no_grad():
        torch.testing.assert_close(cap["conv1"], original(_x(1, 1, 28, 28)) + 1)


def test_data_parallel_models_are_tapped_with_hooks() -> None:
    m = nn.DataParallel(seeded(SeedCNN()))  # no GPUs here: it just calls the module
    with capture(m, "module.conv1") as cap:
        assert len(m.module.conv1._forward_hooks) == 1 and "forward" not in m.module.conv1.__dict__
        m(_x(1, 1, 28, 28))
    assert _all_hooks(m) == 0
    assert cap["module.conv1"].shape == (1, 16, 28, 28)  # type: ignore[union-attr]


# --- gradients from cap.grad ---------------------------------------------------------------------


def _seed_oracle(m: SeedCNN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c1 = m.conv1(x)
    c2 = m.conv2(m.pool1(m.relu1(c1)))
    y = m.fc(m.pool2(m.relu2(c2)).flatten(1))
    return c1, c2, y


def test_grad_equals_autograd_grad_and_leaves_dot_grad_alone() -> None:
    m = seeded(SeedCNN())
    x = _x(3, 1, 28, 28)
    before = model_state(m)
    cap = capture(m, ["conv1", "conv2"], gradients=True)
    with cap:
        out = m(x)
        assert _all_hooks(m) == 2
    grads = cap.grad(out[:, 2], retain_graph=True)
    c1, c2, y = _seed_oracle(m, x)
    g1, g2 = torch.autograd.grad(y[:, 2].sum(), [c1, c2], retain_graph=True)
    torch.testing.assert_close(grads["conv1"], g1)
    torch.testing.assert_close(grads["conv2"], g2)
    weights = torch.randn(3, 10, generator=torch.Generator().manual_seed(0))
    grads = cap.grad(out, weights)  # grad_outputs, as in torch.autograd.grad
    (g2w,) = torch.autograd.grad(y, [c2], weights)
    torch.testing.assert_close(grads["conv2"], g2w)
    assert cap.gradients["conv2"] is grads["conv2"]
    assert_same_state(before, model_state(m))  # no parameter .grad appeared


def test_grad_errors_name_the_problem() -> None:
    m = seeded(SharedCNN())
    with capture(m, ["stem", "block.0"], gradients=True) as cap:
        out = m(_x(1, 1, 6, 6))
    with pytest.raises(CaptureError, match="does not depend on layer"):
        cap.grad(cap["stem"].sum() * 0 + out.detach().sum() + cap["block.0"][0].sum())  # type: ignore[union-attr, index]
    with pytest.raises(CaptureError, match="requires no grad"):
        cap.grad(out.detach().sum())
    with pytest.raises(CaptureError, match="records no gradients"), capture(m, "stem") as plain:
        plain.grad(out.sum())


# --- several captures at once: any exit order, several threads ------------------------------------


@pytest.mark.parametrize("gradients", [False, True])
@pytest.mark.parametrize("order", ["nested", "crossed"])
def test_two_captures_on_one_module_in_every_order_leave_nothing_behind(order: str, gradients: bool) -> None:
    m = seeded(SeedCNN())
    x = _x(1, 1, 28, 28)
    before = model_state(m)
    a = capture(m, ["conv1", "fc"], gradients=gradients)
    b = capture(m, ["conv1"], gradients=gradients)
    a.__enter__()
    b.__enter__()
    assert len(m.conv1._forward_hooks) == 2
    m(x)
    if order == "nested":
        b.__exit__(None, None, None)
        a.__exit__(None, None, None)
    else:  # exited in the order they were entered: what concurrent requests produce
        a.__exit__(None, None, None)
        assert len(m.conv1._forward_hooks) == 1  # b's hook, and only b's, is still there
        b.__exit__(None, None, None)
    assert _all_hooks(m) == 0
    m(x)  # after both exits nothing is collected any more
    assert len(a.calls("conv1")) == 1 and len(b.calls("conv1")) == 1 and len(a.calls("fc")) == 1
    expected = F.conv2d(x, m.conv1.weight, m.conv1.bias, padding=2).detach()
    torch.testing.assert_close(a["conv1"].detach(), expected)  # type: ignore[union-attr]
    torch.testing.assert_close(b["conv1"].detach(), expected)  # type: ignore[union-attr]
    assert_same_state(before, model_state(m))


@pytest.mark.parametrize("gradients", [False, True])
def test_captures_in_two_threads_on_one_shared_model_each_get_their_own_values(gradients: bool) -> None:
    import threading

    m = seeded(ResNet18(num_classes=4))
    inputs = [_x(1, 3, 32, 32, seed=s) for s in (1, 2)]
    with torch.no_grad():
        expected = [m.layer1[0].bn2(m.layer1[0].conv2(F.relu(m.layer1[0].bn1(m.layer1[0].conv1(
            m.maxpool(m.relu(m.bn1(m.conv1(x))))))))) for x in inputs]
    both_inside = threading.Barrier(2, timeout=30)
    results: dict[int, object] = {}

    def work(i: int) -> None:
        try:
            with torch.enable_grad(), capture(m, ["layer1.0.bn2", "fc"], gradients=gradients) as cap:
                both_inside.wait()  # both captures' hooks are on the model now
                for _ in range(5):
                    cap.clear()
                    out = m(inputs[i])
                    both_inside.wait()
            grad = cap.grad(out[:, 0].sum())["layer1.0.bn2"] if gradients else None
            results[i] = (cap["layer1.0.bn2"], len(cap.calls("fc")), grad, out)
        except BaseException as exc:  # reported by the main thread
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert _all_hooks(m) == 0
    for i in range(2):
        got = results[i]
        assert not isinstance(got, BaseException), got
        value, fc_calls, grad, _ = got  # type: ignore[misc]  # a tuple when not an exception
        assert fc_calls == 1  # only this thread's own forward pass was recorded
        torch.testing.assert_close(value.detach(), expected[i])
        if gradients:
            bn2 = expected[i].clone().requires_grad_(True)
            b = m.layer1[0]
            identity = m.maxpool(m.relu(m.bn1(m.conv1(inputs[i]))))
            h = F.relu(bn2 + identity)
            y = m.fc(m.avgpool(m.layer4(m.layer3(m.layer2(m.layer1[1](h))))).flatten(1))
            (g,) = torch.autograd.grad(y[:, 0].sum(), [bn2])
            torch.testing.assert_close(grad, g)
            assert b is m.layer1[0]


def test_observe_sees_only_its_own_thread() -> None:
    import threading

    m = seeded(SeedCNN())
    seen: list[int] = []
    other_done = threading.Event()

    def other() -> None:
        with torch.no_grad():
            m(_x(3, 1, 28, 28))
        other_done.set()

    from convlens.inspect import observe

    with torch.no_grad(), observe(m, "conv1", lambda name, v: seen.append(v.shape[0])):
        t = threading.Thread(target=other)
        t.start()
        t.join(timeout=30)
        m(_x(2, 1, 28, 28))
    assert other_done.is_set() and seen == [2]
    assert _all_hooks(m) == 0


def test_replace_output_changes_what_follows_and_is_removed() -> None:
    from convlens.inspect.capture import replace_output

    m = seeded(SeedCNN())
    x = _x(2, 1, 28, 28)
    with torch.no_grad():
        plain = m(x)
        with replace_output(m, "relu2", lambda out: out * 0):
            zeroed = m(x)
            assert _all_hooks(m) == 1
        again = m(x)
    torch.testing.assert_close(zeroed, m.fc.bias.detach().expand(2, -1))  # nothing reached fc but its bias
    torch.testing.assert_close(again, plain)
    assert _all_hooks(m) == 0
    with pytest.raises(ZeroDivisionError), replace_output(m, "relu2", lambda out: out):
        1 / 0  # noqa: B018
    assert _all_hooks(m) == 0
