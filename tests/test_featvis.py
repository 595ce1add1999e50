"""Feature visualisation (convlens.featvis) against known answers.

* A planted linear unit ``s(x) = w·x`` under an L2-bounded input ``‖x‖ ≤ r`` has the
  analytic optimum ``x* = r w / ‖w‖`` (Cauchy–Schwarz): the visualisation must point
  the same way (cosine ≥ 0.99).
* A planted ReLU conv template ``T`` followed by global max-pooling scores an input by
  its best-matching patch, ``max_ij relu(<T, x_ij>)``; under the same bound the best patch
  is ``x_ij ∝ T`` wherever it sits: the image around its strongest unit must correlate
  with ``T`` (≥ 0.9), with jitter and the Fourier parametrisation on.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import convlens
from convlens.errors import ConfigError, LayerError
from convlens.inspect.featvis import featvis, reliability

NO_TRANSFORMS = {"jitter": 0, "scale": (), "rotate": 0.0}


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    from _helpers import one_thread

    with one_thread():
        yield


def _linear_model(inputs: int = 784, units: int = 3) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, units))


def test_planted_linear_unit_reaches_the_analytic_optimum() -> None:
    model = _linear_model()
    r = 3.0
    for param in ("pixels", "fourier"):
        vis = featvis(model, "1", steps=100, input_shape=(1, 28, 28), param=param, max_norm=r, **NO_TRANSFORMS)
        w = model[1].weight.detach().double()
        optimum = r * w / w.norm(dim=1, keepdim=True)  # x* = r w / ‖w‖
        x = vis.inputs.flatten(1).double()
        cos = torch.nn.functional.cosine_similarity(x, optimum, dim=1)
        assert cos.min() >= 0.99, (param, cos)
        assert torch.allclose(x.norm(dim=1), torch.full((3,), r, dtype=torch.float64), rtol=1e-3)
        # the activation reached is close to the analytic maximum r‖w‖ + b
        best = (r * w.norm(dim=1) + model[1].bias.detach().double()).numpy()
        assert np.all(vis.activation >= 0.99 * best - 1e-6)


def test_planted_relu_template_with_global_max_pool() -> None:
    torch.manual_seed(2)
    template = torch.randn(1, 1, 7, 7)
    conv = nn.Conv2d(1, 1, 7, bias=False)
    conv.weight.data.copy_(template)
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten())
    for param in ("fourier", "pixels"):
        vis = featvis(model, "3", [0], steps=128, input_shape=(1, 20, 20), param=param, max_norm=5.0, jitter=1)
        x = vis.inputs.double()
        response = torch.nn.functional.conv2d(x, template.double())[0, 0]  # every patch's match
        i, j = divmod(int(response.argmax()), response.shape[1])
        patch = x[0, 0, i:i + 7, j:j + 7]
        corr = float(np.corrcoef(patch.flatten().numpy(), template.flatten().double().numpy())[0, 1])
        assert corr >= 0.9, (param, corr)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (5, 20, 24)])
def test_any_input_geometry_at_its_native_size(shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    c = shape[0]
    model = nn.Sequential(nn.Conv2d(c, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    vis = featvis(model, "3", [0, 5, 7], steps=48, input_shape=shape, mean=0.5, std=0.25)
    assert vis.images.shape == (3, *shape)
    assert vis.images.min() >= 0.0 and vis.images.max() <= 1.0  # pixels, as drawn
    # what the model read is those pixels normalised with the model's own constants
    np.testing.assert_allclose(vis.inputs.double().numpy(), (vis.images - 0.5) / 0.25, rtol=1e-5, atol=1e-5)
    # the ascent raised each channel above what a flat grey input gives it
    with torch.no_grad():
        grey = torch.nn.functional.leaky_relu(model[:4](torch.zeros((1, *shape)))[0], 0.01).mean(dim=(1, 2))
    assert np.all(vis.activation > grey[[0, 5, 7]].double().numpy())
    assert np.all(vis.history[-8:].mean(axis=0) > vis.history[:8].mean(axis=0))


def test_deterministic_for_a_seed_on_cpu() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.Conv2d(4, 4, 3))
    a = featvis(model, "2", steps=20, input_shape=(1, 16, 16), seed=3)
    b = featvis(model, "2", steps=20, input_shape=(1, 16, 16), seed=3)
    c = featvis(model, "2", steps=20, input_shape=(1, 16, 16), seed=4)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.history, b.history)
    assert not np.array_equal(a.images, c.images)


def test_single_unit_diversity_and_model_left_as_it_came() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3))
    model.train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    model[3].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vis = featvis(model, "3", [1], steps=16, input_shape=(1, 12, 12), unit=(2, 3), per_channel=3, diversity=1.0)
    assert vis.channels == [1, 1, 1] and vis.images.shape == (3, 1, 12, 12)
    assert not np.array_equal(vis.images[0], vis.images[1])
    assert all(m.training for m in model.modules())
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight)) and model[1].weight.grad is None
    assert not model[3].weight.requires_grad and model[0].weight.requires_grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_run_source_and_lazy_export(tmp_path, mnist_dir) -> None:  # type: ignore[no-untyped-def]
    from _helpers import untrained_run
    from convlens.models.run import load_run

    run = load_run(untrained_run(tmp_path / "run", mnist_dir))
    vis = convlens.featvis(run, "conv2", [0, 31], steps=4)
    assert vis.images.shape == (2, 1, 28, 28)
    assert vis.settings["mean"] == pytest.approx(list(run.config.data.mean))


def test_reliability_against_natural_examples() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3))
    model[2].bias.data.fill_(5.0)  # positive peaks: a ratio is defined
    vis = featvis(model, "2", steps=8, input_shape=(1, 10, 10))
    natural = vis.inputs[:, None].repeat(1, 4, 1, 1, 1)  # the visualisation itself, 4 times
    rel = reliability(model, vis, natural, torch.as_tensor(vis.peak) / 2)
    np.testing.assert_allclose(rel.ratio, 2.0, rtol=1e-6)
    np.testing.assert_allclose(rel.similarity, 1.0, rtol=1e-6)
    assert rel.earlier == "0"


def test_bad_input_is_one_clear_line() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(start_dim=0))
    with pytest.raises(ConfigError, match=r"layer '1' outputs \(.*\), which has no channels to visualise"):
        featvis(model, "1", input_shape=(1, 8, 8), steps=2)
    with pytest.raises(ConfigError, match=r"channel 9 is out of range: 0 has channels 0\.\.3"):
        featvis(model, "0", [1, 9], input_shape=(1, 8, 8), steps=2)
    for steps in (0, -3):
        with pytest.raises(ConfigError, match="steps must be a positive integer"):
            featvis(model, "0", input_shape=(1, 8, 8), steps=steps)
    with pytest.raises(ConfigError, match="input_shape must be"):
        featvis(model, "0", steps=2)
    with pytest.raises(LayerError, match="unknown layer 'conv9'"):
        featvis(model, "conv9", input_shape=(1, 8, 8), steps=2)
