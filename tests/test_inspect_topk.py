"""topk_examples against a brute-force argsort over the whole dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convlens
from convlens.conv.arithmetic import Geometry
from convlens.errors import ConfigError
from convlens.inspect import topk_examples
from zoo import ResNet18, SeedCNN, SharedCNN, assert_same_state, model_state, seeded

# Receptive fields of the seed CNN, from the conv package's arithmetic (an independent path
# to the same lo/hi/jump that convlens.inspect.receptive reports).
SEED_FIELDS = {
    "conv1": Geometry.identity().conv(5, padding=2),
    "relu1": Geometry.identity().conv(5, padding=2),
    "pool1": Geometry.identity().conv(5, padding=2).conv(2, stride=2),
    "conv2": Geometry.identity().conv(5, padding=2).conv(2, stride=2).conv(5, padding=2),
    "relu2": Geometry.identity().conv(5, padding=2).conv(2, stride=2).conv(5, padding=2),
}


def _inputs(n: int, shape: tuple[int, ...] = (1, 28, 28), seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def _brute_force(acts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel: inputs sorted by (max activation desc, index asc), and where the max is."""
    n, c = acts.shape[:2]
    flat = acts.reshape(n, c, -1)
    peak = flat.max(axis=2)  # (N, C)
    where = flat.argmax(axis=2)  # first maximum
    idx = np.stack([np.lexsort((np.arange(n), -peak[:, ch]))[:k] for ch in range(c)])  # (C, k)
    values = np.take_along_axis(peak.T, idx, axis=1)
    w = acts.shape[3] if acts.ndim == 4 else 1
    pos = np.take_along_axis(where.T, idx, axis=1)
    return idx, values, np.stack((pos // w, pos % w), axis=-1)


def _crop_by_hand(x: torch.Tensor, n: int, geo: Geometry, i: int, j: int) -> torch.Tensor:
    (r0, r1), (c0, c1) = geo.region(i, j)
    pad = 64
    xp = F.pad(x[n : n + 1], (pad, pad, pad, pad), value=float("nan"))[0]
    return xp[:, r0 + pad : r1 + pad + 1, c0 + pad : c1 + pad + 1]


@pytest.mark.parametrize("layer", ["conv1", "relu2"])
def test_equals_brute_force_argsort(layer: str) -> None:
    m = seeded(SeedCNN())
    x = _inputs(257)  # not a multiple of the batch size
    report = topk_examples(m, x, [layer], k=7, fields=SEED_FIELDS, batch_size=50, progress=False)
    with torch.no_grad():
        c1 = m.conv1(x)
        acts = c1 if layer == "conv1" else m.relu2(m.conv2(m.pool1(m.relu1(c1))))
    idx, values, loc = _brute_force(acts.numpy(), 7)
    t = report[layer]
    np.testing.assert_array_equal(t.indices.numpy(), idx)
    np.testing.assert_allclose(t.values.numpy(), values, rtol=0, atol=0)
    np.testing.assert_array_equal(t.locations.numpy(), loc)
    assert t.n_inputs == 257 and t.k == 7 and t.channels == list(range(acts.shape[1]))
    geo = SEED_FIELDS[layer]
    assert t.rf == geo.rf and t.jump == geo.jump
    assert t.crops is not None
    for ch in (0, 5, acts.shape[1] - 1):
        for r in (0, 6):
            i, j = (int(v) for v in t.locations[ch, r])
            n = int(t.indices[ch, r])
            torch.testing.assert_close(t.crops[ch, r], _crop_by_hand(x, n, geo, i, j), equal_nan=True)
            assert t.regions[ch, r].tolist() == [list(p) for p in geo.region(i, j)]


def test_ties_go_to_the_earlier_input_and_k_larger_than_data() -> None:
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([-1.0, 0.0]))
    m = nn.Sequential(conv, nn.ReLU())
    x = _inputs(5, (1, 3, 3))
    t = topk_examples(m, x, "1", k=8, fields={"1": Geometry.identity()}, batch_size=2, progress=False)["1"]
    assert t.k == 5  # only five inputs
    assert t.indices[0].tolist() == [0, 1, 2, 3, 4]  # all zero: earlier inputs first
    assert t.values[0].tolist() == [0.0] * 5
    assert t.locations[0].tolist() == [[0, 0]] * 5  # first position of the maximum
    peak = x.amax(dim=(1, 2, 3)).clamp(min=0)
    assert t.indices[1].tolist() == torch.sort(peak, descending=True, stable=True).indices.tolist()


def test_first_conv_keeps_its_filters_channels_subset_and_crop_shape() -> None:
    m = seeded(SeedCNN())
    x = _inputs(60)
    rep = topk_examples(m, x, ["conv1", "conv2"], k=3, channels=[7, 2], fields=SEED_FIELDS, progress=False)
    t1, t2 = rep["conv1"], rep["conv2"]
    assert t1.channels == [7, 2] and t1.values.shape == (2, 3)
    assert t1.filters is not None
    torch.testing.assert_close(t1.filters, m.conv1.weight.detach()[[7, 2]])
    assert t2.filters is None  # conv2 does not look at the input directly
    assert t2.crops is not None and t2.crops.shape == (2, 3, 1, 14, 14)
    with torch.no_grad():
        acts = m.conv2(m.pool1(m.relu1(m.conv1(x)))).numpy()
    idx, _, _ = _brute_force(acts, 3)
    np.testing.assert_array_equal(t2.indices.numpy(), idx[[7, 2]])
    assert t2.row(2) == 1
    with pytest.raises(ConfigError, match="channel 5 was not computed"):
        t2.row(5)


def test_linear_layer_gets_the_whole_input() -> None:
    m = seeded(SeedCNN())
    x = _inputs(30)
    t = topk_examples(m, x, "fc", k=4, fields={}, progress=False)["fc"]
    with torch.no_grad():
        out = m(x).numpy()
    idx, values, _ = _brute_force(out, 4)
    np.testing.assert_array_equal(t.indices.numpy(), idx)
    np.testing.assert_allclose(t.values.numpy(), values, rtol=0, atol=0)
    assert t.crops is not None and t.crops.shape == (10, 4, 1, 28, 28)
    torch.testing.assert_close(t.crops[3, 0], x[int(t.indices[3, 0])])


def test_shared_module_and_state_unchanged() -> None:
    m = seeded(SharedCNN()).train()
    before = model_state(m)
    x = _inputs(20, (1, 6, 6))
    g = Geometry.identity().conv(3, padding=1)
    fields = {"block.0": g}
    rep = topk_examples(m, x, "block.0", k=3, fields=fields, crops=False, progress=False)
    assert_same_state(before, model_state(m))
    assert sorted(rep) == ["block.0#1", "block.0#2"]
    assert rep["block.0#1"].crops is None
    with torch.no_grad():
        a = m.block[0](m.stem(x))
    idx, _, _ = _brute_force(a.numpy(), 3)
    np.testing.assert_array_equal(rep["block.0#1"].indices.numpy(), idx)


def test_resnet_layer_and_crop_budget() -> None:
    m = seeded(ResNet18(num_classes=3))
    x = _inputs(6, (3, 32, 32))
    geo = Geometry(jump=(4, 4), lo=(-9, -9), hi=(9, 9))
    with pytest.raises(ConfigError, match="crops for 64 channels"):
        topk_examples(m, x, "layer1", k=2, fields={"layer1": geo}, crop_budget_mb=0.1, progress=False)
    t = topk_examples(m, x, "layer1", k=2, channels=[3], fields={"layer1": geo}, progress=False)["layer1"]
    m.eval()
    with torch.no_grad():
        acts = m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))).numpy()
    idx, values, loc = _brute_force(acts, 2)
    assert t.indices.tolist() == [idx[3].tolist()]
    np.testing.assert_allclose(t.values[0].numpy(), values[3], rtol=1e-6)
    assert t.locations[0].tolist() == loc[3].tolist()


def test_default_fields_come_from_the_receptive_module() -> None:
    m = seeded(SeedCNN())
    x = _inputs(40)
    t = topk_examples(m, x, "conv2", k=2, progress=False)["conv2"]
    assert t.rf == (14, 14) and t.jump == (2, 2)
    ref = topk_examples(m, x, "conv2", k=2, fields=SEED_FIELDS, progress=False)["conv2"]
    torch.testing.assert_close(t.crops, ref.crops, equal_nan=True)


def test_real_mnist_topk(mnist_dir: Path) -> None:
    ds = convlens.load_dataset("mnist", "test", data_dir=mnist_dir)
    m = seeded(SeedCNN())
    t = topk_examples(m, ds, "conv2", k=5, fields=SEED_FIELDS, batch_size=512, progress=False)["conv2"]
    with torch.no_grad():
        acts = m.conv2(m.pool1(m.relu1(m.conv1(ds.normalise(ds.images))))).numpy()
    idx, _, _ = _brute_force(acts, 5)
    np.testing.assert_array_equal(t.indices.numpy(), idx)


def test_errors() -> None:
    m = SeedCNN()
    x = _inputs(3)
    with pytest.raises(ConfigError, match="k must be"):
        topk_examples(m, x, "conv1", k=0, fields=SEED_FIELDS, progress=False)
    with pytest.raises(ConfigError, match="no channel 16"):
        topk_examples(m, x, "conv1", channels=[16], fields=SEED_FIELDS, progress=False)
    with pytest.raises(ConfigError, match="channels is empty"):
        topk_examples(m, x, "conv1", channels=[], fields=SEED_FIELDS, progress=False)
