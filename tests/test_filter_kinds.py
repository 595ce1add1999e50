"""Filter kinds (convlens.classify_filters) on synthetic filters of known kind.

Each kind is drawn from its own formula with random parameters and 5% pixel noise, at
5×5 (seed-cnn's conv1) and 7×7: Gabor functions (any phase: an oriented edge or bar),
step edges (an odd tanh step under a wide Gaussian window), blobs (a Gaussian, or a
centre-surround difference of Gaussians, either sign, off centre by up to 0.7 px) and
white noise. The classifier must label ≥ 95% of them correctly, and find the edges'
angles.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from convlens.errors import ConfigError
from convlens.inspect.kinds import _grid, classify_filters

N_PER_KIND = 16


def _synthetic(kind: str, k: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One k×k filter of ``kind`` and its edge angle (degrees, [0, 180); x right, y up)."""
    x, y = _grid(k, k)
    theta = rng.uniform(0, math.pi)  # direction across the edge (the wave's direction)
    u = x * math.cos(theta) + y * math.sin(theta)
    v = -x * math.sin(theta) + y * math.cos(theta)
    if kind == "gabor":
        f, su, sv, phi = rng.uniform(0.2, 0.35), rng.uniform(1.0, 2.0), rng.uniform(1.2, 2.5), rng.uniform(-math.pi, math.pi)
        g = np.exp(-u**2 / (2 * su**2) - v**2 / (2 * sv**2)) * np.cos(2 * math.pi * f * u + phi)
    elif kind == "edge":
        g = np.tanh((u - rng.uniform(-0.5, 0.5)) / rng.uniform(0.4, 1.0)) * np.exp(-(u**2 + v**2) / (2 * rng.uniform(2, 4) ** 2))
    elif kind == "blob":
        s = rng.uniform(0.8, 1.6)
        x0, y0 = rng.uniform(-0.7, 0.7, 2)
        r2 = (x - x0) ** 2 + (y - y0) ** 2
        g = (np.exp(-r2 / (2 * s**2)) - rng.uniform(0, 0.6) * np.exp(-r2 / (2 * (2.2 * s) ** 2))) * rng.choice([-1, 1])
    else:
        g = rng.standard_normal((k, k))
    if kind != "noise":
        g = g / np.abs(g).max() + rng.normal(0, 0.05, g.shape)
    return g * rng.uniform(0.05, 0.5), (math.degrees(theta) + 90) % 180


EXPECTED = {"gabor": {"edge", "bar"}, "edge": {"edge"}, "blob": {"blob"}, "noise": {"noise"}}


@pytest.mark.parametrize("k", [5, 7])
def test_synthetic_filters_are_labelled_correctly(k: int) -> None:
    rng = np.random.default_rng(k)
    made = {kind: [_synthetic(kind, k, rng) for _ in range(N_PER_KIND)] for kind in EXPECTED}
    right, total = 0, 0
    for kind, filters in made.items():
        result = classify_filters(np.stack([f for f, _ in filters])[:, None], "synthetic")
        got = [r.kind for r in result]
        hits = sum(g in EXPECTED[kind] for g in got)
        assert hits >= N_PER_KIND - 2, (kind, got)
        right, total = right + hits, total + len(got)
        if kind == "edge":  # the angle of the edge, within 15° (angles wrap at 180°)
            errors = [abs((r.angle - a + 90) % 180 - 90) for r, (_, a) in zip(result, filters, strict=True)
                      if r.angle is not None]
            assert np.mean(np.array(errors) < 15) >= 0.9, errors
    assert right / total >= 0.95


def test_colour_opponent_and_summary_sentence() -> None:
    x, y = _grid(5, 5)
    blob = np.exp(-(x**2 + y**2) / 2)
    red_green = np.stack([blob, -blob, np.zeros_like(blob)])  # red on, green off: no luminance
    luminance_edge = np.stack([np.tanh(x)] * 3)  # the same vertical edge in every channel
    result = classify_filters(np.stack([red_green, luminance_edge]), "conv1")
    assert [r.kind for r in result] == ["colour", "edge"]
    assert result[0].r2 == pytest.approx(1.0)  # all of its energy is colour-opponent
    assert round(result[1].angle or 0) % 180 == 90
    assert result.counts() == {"edge": 1, "bar": 0, "blob": 0, "colour": 1, "noise": 0}
    assert result.summary().startswith("1 of 2 conv1 filters are oriented edge or bar detectors (mean fit R² ")
    assert result.summary().endswith("; 1 colour-opponent")


def test_several_input_channels_use_the_shared_pattern() -> None:
    _, y = _grid(5, 5)
    edge = np.tanh(y)  # horizontal edge
    five = np.stack([edge * s for s in (1.0, 0.5, -0.3, 0.8, 0.1)])[None]  # one filter over 5 channels
    (k,) = classify_filters(five)
    assert k.kind == "edge" and round(k.angle or 0) % 180 == 0


def test_bad_weights_are_one_line() -> None:
    with pytest.raises(ConfigError, match="must be 4-D"):
        classify_filters(np.zeros((3, 5, 5)))
    with pytest.raises(ConfigError, match="at least 3×3"):
        classify_filters(np.zeros((2, 1, 2, 2)))
    with pytest.raises(ConfigError, match="NaN"):
        classify_filters(np.full((1, 1, 5, 5), np.nan))


def test_the_kinds_figure_says_what_the_classifier_found() -> None:
    import torch
    from torch import nn

    from convlens import views

    x, _ = _grid(5, 5)
    model = nn.Sequential(nn.Conv2d(1, 2, 5))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(np.stack([np.tanh(x), np.exp(-(x**2 + _grid(5, 5)[1] ** 2) / 2)])[:, None]))
    kinds, fig = views.filter_kinds(model)
    assert fig.data["kinds"] == [k.kind for k in kinds] == ["edge", "blob"]
    assert kinds.summary() in fig.caption and "1 edge" in fig.alt and "1 blob" in fig.alt
