"""Filter matching (the permuted twin), disagreement and McNemar against hand-counted
oracles, linear probes on separable data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from convlens.compare import cka, disagreement, linear_probe, match_filters, mcnemar_exact
from convlens.errors import DataError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def permuted_twin(net: Net, p1: list[int], p2: list[int]) -> Net:
    """The same function with conv1's channels in order p1 and conv2's in order p2."""
    twin = Net().double()
    with torch.no_grad():
        twin.conv1.weight.copy_(net.conv1.weight[p1])
        twin.conv1.bias.copy_(net.conv1.bias[p1])
        twin.conv2.weight.copy_(net.conv2.weight[p2][:, p1])
        twin.conv2.bias.copy_(net.conv2.bias[p2])
        twin.fc.weight.copy_(net.fc.weight[:, p2])
        twin.fc.bias.copy_(net.fc.bias)
    return twin


@pytest.fixture
def pair() -> tuple[Net, Net, list[int], list[int], torch.Tensor]:
    torch.manual_seed(0)
    net = Net().double()
    p1, p2 = [3, 0, 5, 1, 4, 2], [4, 2, 0, 3, 1]
    x = torch.randn(48, 1, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return net, permuted_twin(net, p1, p2), p1, p2, x


def test_permuted_twin_is_matched_exactly_and_cka_is_one(pair) -> None:  # type: ignore[no-untyped-def]
    net, twin, p1, p2, x = pair
    with torch.no_grad():
        assert torch.allclose(net(x), twin(x), atol=1e-12)
    for layer, perm in (("conv1", p1), ("conv2", p2)):
        m = match_filters(net, twin, x, layer, batch_size=16, progress=False)
        # twin channel j is net channel perm[j], so net channel perm[j] is matched to j
        expect = np.empty(len(perm), dtype=np.int64)
        expect[perm] = np.arange(len(perm))
        assert m.partner.tolist() == expect.tolist()
        assert np.allclose(m.matched, 1.0, atol=1e-9)
        assert m.samples == "positions" and m.above_null.all()
        assert m.threshold < 0.99
    sim = cka(net, twin, x, layers_a=["conv1", "conv2", "fc"], batch_size=16, progress=False)
    assert np.allclose(np.diag(sim.matrix), 1.0, atol=1e-6)


def test_correlations_equal_numpy(pair) -> None:  # type: ignore[no-untyped-def]
    net, _, _, _, x = pair
    other = Net().double()
    m = match_filters(net, other, x, "conv1", "conv2", batch_size=20, progress=False)
    with torch.no_grad():
        a = net.conv1(x).permute(0, 2, 3, 1).reshape(-1, 6).numpy()
        b = other.conv2(other.relu1(other.conv1(x))).permute(0, 2, 3, 1).reshape(-1, 5).numpy()
    expect = np.corrcoef(a.T, b.T)[:6, 6:]
    assert np.allclose(m.correlation, expect, atol=1e-9)
    from scipy.optimize import linear_sum_assignment

    r, c = linear_sum_assignment(-expect)
    assert sorted(zip(m.a_channels.tolist(), m.b_channels.tolist(), strict=True)) == sorted(zip(r, c, strict=True))
    assert len(m.matched) == 5 and (np.diff(m.matched) <= 1e-12).all()  # best pair first


def test_dead_channel_correlates_zero_with_a_warning(pair) -> None:  # type: ignore[no-untyped-def]
    net, twin, _, _, x = pair
    with torch.no_grad():
        twin.conv1.weight[2] = 0
    with pytest.warns(UserWarning, match="1 constant"):
        m = match_filters(net, twin, x, "conv1", progress=False)
    assert not np.isnan(m.correlation).any() and (m.correlation[:, 2] == 0).all()


def test_mcnemar_matches_the_binomial_sum() -> None:
    for b, c in [(0, 0), (3, 12), (7, 7), (0, 9), (40, 25)]:
        n, k = b + c, min(b, c)
        expect = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
        assert mcnemar_exact(b, c) == pytest.approx(expect, rel=1e-12)


def test_disagreement_counts_by_hand() -> None:
    # two "models" that read their prediction off the input: A the first feature, B the second
    class Reads(nn.Module):
        def __init__(self, col: int) -> None:
            super().__init__()
            self.col = col

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.one_hot(x[:, self.col].long(), 3).double()

    pa = [0, 1, 2, 2, 1, 0, 0, 1]
    pb = [0, 2, 2, 1, 1, 0, 1, 1]
    y = torch.tensor([0, 1, 2, 1, 1, 0, 0, 2])
    x = torch.tensor([pa, pb], dtype=torch.float64).T
    d = disagreement(Reads(0), Reads(1), [(x[:5], y[:5]), (x[5:], y[5:])], classes=["a", "b", "c"], progress=False)
    assert d.indices.tolist() == [1, 3, 6]
    # A is right on 0, 1, 2, 4, 5, 6 (6/8); B on 0, 2, 3, 4, 5 (5/8)
    assert d.accuracy_a == pytest.approx(6 / 8) and d.accuracy_b == pytest.approx(5 / 8)
    # class 0 = inputs 0, 5, 6; class 1 = 1, 3, 4; class 2 = 2, 7
    assert d.per_class("a").tolist() == [1.0, pytest.approx(2 / 3), 0.5]
    assert d.per_class("b").tolist() == [pytest.approx(2 / 3), pytest.approx(2 / 3), 0.5]
    assert d.difference.tolist() == [pytest.approx(-1 / 3), 0.0, 0.0]
    assert d.a_only == 2 and d.b_only == 1  # only A: inputs 1 and 6; only B: input 3
    agree = np.zeros((3, 3), dtype=int)
    for i, j in zip(pa, pb, strict=True):
        agree[i, j] += 1
    assert d.agreement.tolist() == agree.tolist()
    assert d.p_value == pytest.approx(1.0)  # 2 against 1: 2 · P(X ≤ 1), X ~ Bin(3, ½) = 2 · 4/8
    with pytest.raises(DataError, match="no labels"):
        disagreement(Reads(0), Reads(1), x, progress=False)


def test_linear_probe_reads_a_separable_layer() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 1, 4, 4, generator=g)
    y = (x[:, 0, 0, 0] > 0).long() + 2 * (x[:, 0, 1, 1] > 0).long()  # four classes, linear in pixels
    keep = nn.Sequential(nn.Flatten())
    noise = nn.Sequential(nn.Flatten(), nn.Linear(16, 16))
    with torch.no_grad():
        noise[1].weight.zero_()  # a layer that forgets the input: nothing to read
    train = [(x[i:i + 50], y[i:i + 50]) for i in range(0, 300, 50)]
    test = [(x[300:], y[300:])]
    report = linear_probe(keep, noise, train, test, ["0"], ["1"], classes=4, epochs=12, lr=0.1, progress=False)
    assert report.accuracy["a"]["0"] >= 0.9
    assert report.accuracy["b"]["1"] <= 0.45
    assert report.n_train == 300 and report.n_test == 100
