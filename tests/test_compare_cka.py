"""CKA against float64 NumPy oracles and its known invariances (Kornblith et al. 2019),
the minibatch estimator against the unbiased HSIC formula (Song et al. 2012, Nguyen et al.
2021), and refusals as one line.

The models here are tiny and in float64, so the oracles can read the full activation
matrices directly (``model[:k](x)``, no hooks) and the tolerances can be 1e-6.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convlens.compare import CKAWarning, cka
from convlens.errors import ConfigError, DataError, LayerError

# --- independent oracles --------------------------------------------------------------------


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. eq. (6): ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on centred features."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. (2012) eq. (5), written from the paper with explicit loops-free NumPy."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()  # noqa: E741
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    value = np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (one @ k @ l @ one)
    return float(value / (n * (n - 3)))


def debiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    k, l = x @ x.T, y @ y.T  # noqa: E741
    return unbiased_hsic(k, l) / np.sqrt(unbiased_hsic(k, k) * unbiased_hsic(l, l))


def rbf_cka(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    def gram(f: np.ndarray) -> np.ndarray:
        d2 = ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)
        iu = np.triu_indices(len(f), 1)
        s = sigma * np.median(np.sqrt(d2[iu]))
        k = np.exp(-d2 / (2 * s * s))
        h = np.eye(len(f)) - 1 / len(f)
        return h @ k @ h

    k, l = gram(x), gram(y)  # noqa: E741
    return float((k * l).sum() / np.sqrt((k * k).sum() * (l * l).sum()))


# --- models whose features are a given matrix -------------------------------------------------


def features_model(d_in: int, weight: np.ndarray | None = None) -> nn.Module:
    """``layer "0"`` outputs ``x`` (weight None) or ``x @ weight.T``."""
    if weight is None:
        return nn.Sequential(nn.Identity()).double()
    lin = nn.Linear(d_in, weight.shape[0], bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(weight))
    return nn.Sequential(lin)


def sim(a: nn.Module, b: nn.Module, x: np.ndarray, **kw: object) -> float:
    out = cka(a, b, torch.from_numpy(x), layers_a=["0"], layers_b=["0"], progress=False, **kw)  # type: ignore[arg-type]
    return float(out.matrix[0, 0])


matrices = st.tuples(st.integers(8, 40), st.integers(1, 6), st.integers(0, 2**31 - 1))


def draw(shape: tuple[int, int, int]) -> np.ndarray:
    n, d, seed = shape
    return np.random.default_rng(seed).normal(size=(n, d)) * np.random.default_rng(seed + 1).uniform(0.5, 3, size=d)


@settings(max_examples=30, deadline=None)
@given(matrices)
def test_self_similarity_is_one(shape: tuple[int, int, int]) -> None:
    x = draw(shape)
    m = features_model(x.shape[1])
    assert sim(m, m, x) == pytest.approx(1.0, abs=1e-6)
    assert sim(m, features_model(x.shape[1]), x, batch_size=7) == pytest.approx(1.0, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(matrices, st.floats(0.01, 100))
def test_invariant_to_orthogonal_maps_scaling_and_permutation(shape: tuple[int, int, int], scale: float) -> None:
    x = draw(shape)
    d = x.shape[1]
    rng = np.random.default_rng(shape[2])
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    perm = np.eye(d)[rng.permutation(d)]
    ident = features_model(d)
    other = draw((shape[0], d, shape[2] + 7))
    base = linear_cka(x, other)
    for w in (q, scale * np.eye(d), perm, scale * q @ perm):
        assert sim(ident, features_model(d, w), x) == pytest.approx(1.0, abs=1e-6)
        # the similarity to a third representation does not move either
        y = torch.from_numpy(np.concatenate([x, other], 1))
        a = nn.Sequential(nn.Identity())
        mixed = cka(_Slice(0, d, w), _Slice(d, 2 * d), y, layers_a=["lin"], layers_b=["lin"], progress=False)
        assert float(mixed.matrix[0, 0]) == pytest.approx(base, abs=1e-6)
        del a


class _Slice(nn.Module):
    """Reads columns start:stop of its input, optionally mapped by ``w``."""

    def __init__(self, start: int, stop: int, w: np.ndarray | None = None) -> None:
        super().__init__()
        self.start, self.stop = start, stop
        d = stop - start
        self.lin = nn.Linear(d, d, bias=False).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.from_numpy(np.eye(d) if w is None else w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x[:, self.start:self.stop])


def test_not_invariant_to_an_arbitrary_invertible_map() -> None:
    x = draw((200, 4, 3))
    w = np.array([[1.0, 5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 0.1]])
    value = sim(features_model(4), features_model(4, w), x)
    assert value == pytest.approx(linear_cka(x, x @ w.T), abs=1e-6)
    assert value < 0.95


@settings(max_examples=20, deadline=None)
@given(matrices)
def test_symmetric(shape: tuple[int, int, int]) -> None:
    x = draw(shape)
    d = x.shape[1]
    w = np.random.default_rng(shape[2]).normal(size=(3, d))
    a, b = features_model(d), features_model(d, w)
    ab = cka(a, b, torch.from_numpy(x), layers_a=["0"], layers_b=["0"], progress=False)
    ba = cka(b, a, torch.from_numpy(x), layers_a=["0"], layers_b=["0"], progress=False)
    assert ab.matrix[0, 0] == pytest.approx(ba.matrix[0, 0], abs=1e-9)
    for est in ("exact", "minibatch"):
        one = cka(a, b, torch.from_numpy(x), layers_a=["0"], layers_b=["0"], estimator=est, progress=False)
        assert np.all((one.matrix >= 0) & (one.matrix <= 1))


def test_dead_channel_and_constant_layer_give_defined_values_and_warnings() -> None:
    x = draw((50, 4, 1))
    x[:, 2] = 1.5  # a dead feature
    m = features_model(4)
    with pytest.warns(CKAWarning, match="1 of 4 channels constant"):
        value = sim(m, m, x)
    assert value == pytest.approx(1.0, abs=1e-6)
    assert value == pytest.approx(linear_cka(np.delete(x, 2, 1), np.delete(x, 2, 1)), abs=1e-6)
    zero = features_model(4, np.zeros((3, 4)))
    for est in ("exact", "minibatch"):
        with pytest.warns(CKAWarning, match="constant over the data"):
            out = cka(m, zero, torch.from_numpy(x), layers_a=["0"], layers_b=["0"], estimator=est, progress=False)
        assert not np.isnan(out.matrix).any() and out.matrix[0, 0] == 0.0
        assert out.warnings


# --- conv models: exact against the full activation matrices ---------------------------------


def conv_net(seed: int, width: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.ReLU(), nn.Conv2d(width, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).double()


def activations(model: nn.Sequential, x: torch.Tensor, upto: int, pool: str = "flatten") -> np.ndarray:
    with torch.no_grad():
        out = model[:upto + 1](x)
    return (out.mean(dim=(2, 3)) if pool == "mean" else out.flatten(1)).numpy()


@pytest.mark.parametrize("budget", [2**31, 300_000])  # the feature-space form, then the Gram form
def test_exact_equals_numpy_on_full_activations(budget: int) -> None:
    a, b = conv_net(0), conv_net(1, width=5)
    x = torch.randn(90, 1, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = cka(a, b, x, layers_a=["0", "2", "6"], layers_b=["0", "3"], batch_size=32, memory_budget=budget,
              progress=False)
    assert out.settings["form"] == ("features" if budget > 10**6 else "gram")
    for i, la in enumerate((0, 2, 6)):
        for j, lb in enumerate((0, 3)):
            expect = linear_cka(activations(a, x, la), activations(b, x, lb))
            assert out.matrix[i, j] == pytest.approx(expect, abs=1e-6)
    assert out.layers_a == ("0", "2", "6") and out.layers_b == ("0", "3")
    assert out.estimator == "exact" and out.stderr is None


def test_gram_form_in_float32_blocks_equals_float64_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A float32 model: Gram blocks at float32, their products summed in float64, over
    many uneven blocks of rows (the symmetric halves counted twice)."""
    from convlens.compare import similarity

    monkeypatch.setattr(similarity, "GRAM_BLOCK", 4 * 203 * 7)  # 4 layers × 203 inputs: 7 rows a block
    torch.manual_seed(3)
    a = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
    b = nn.Sequential(nn.Conv2d(1, 5, 3), nn.ReLU(), nn.Conv2d(5, 7, 3, padding=1), nn.ReLU())
    x = torch.rand(203, 1, 9, 9, generator=torch.Generator().manual_seed(4)) * 3 + 1  # far from centred
    out = cka(a, b, x, layers_a=["0", "3"], memory_budget=2_000_000, batch_size=50, progress=False)
    assert out.settings["form"] == "gram"
    with torch.no_grad():
        fa = [a[:k + 1](x).flatten(1).double().numpy() for k in (0, 3)]
        fb = [b[:k + 1](x).flatten(1).double().numpy() for k in (0, 3)]
    expect = np.array([[linear_cka(p, q) for q in fb] for p in fa])
    assert out.raw is not None and np.abs(out.raw - expect).max() < 1e-6


def test_pooling_averages_over_space() -> None:
    a, b = conv_net(0), conv_net(1)
    x = torch.randn(40, 1, 7, 7, dtype=torch.float64)
    out = cka(a, b, x, pool="mean", progress=False)
    assert out.layers_a == ("0", "2") and out.settings["pool"] == "mean"
    expect = linear_cka(activations(a, x, 0, "mean"), activations(b, x, 2, "mean"))
    assert out.matrix[0, 1] == pytest.approx(expect, abs=1e-6)


def test_minibatch_with_one_batch_is_the_debiased_full_cka() -> None:
    a, b = conv_net(0), conv_net(1)
    x = torch.randn(60, 1, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    out = cka(a, b, x, estimator="minibatch", batch_size=60, progress=False)
    for i, la in enumerate((0, 2)):
        for j, lb in enumerate((0, 2)):
            expect = debiased_cka(activations(a, x, la), activations(b, x, lb))
            assert out.raw is not None and out.raw[i, j] == pytest.approx(expect, abs=1e-6)
    assert out.stderr is None and out.settings["batches"] == 1


def test_minibatch_averages_hsic_over_batches_with_a_jackknife() -> None:
    a, b = conv_net(0), conv_net(1)
    x = torch.randn(80, 1, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    out = cka(a, b, x, layers_a="2", layers_b="0", estimator="minibatch", batch_size=20, progress=False)
    fa, fb = activations(a, x, 2), activations(b, x, 0)
    parts = []
    for s in range(0, 80, 20):
        k, l = fa[s:s + 20] @ fa[s:s + 20].T, fb[s:s + 20] @ fb[s:s + 20].T  # noqa: E741
        parts.append((unbiased_hsic(k, l), unbiased_hsic(k, k), unbiased_hsic(l, l)))
    p = np.array(parts)

    def est(rows: np.ndarray) -> float:
        m = rows.mean(0)
        return float(m[0] / np.sqrt(m[1] * m[2]))

    assert out.matrix[0, 0] == pytest.approx(est(p), abs=1e-6)
    loo = np.array([est(np.delete(p, i, 0)) for i in range(4)])
    se = np.sqrt(3 / 4 * ((loo - loo.mean()) ** 2).sum())
    assert out.stderr is not None and out.stderr[0, 0] == pytest.approx(se, abs=1e-6)


def test_rbf_equals_numpy() -> None:
    a, b = conv_net(0), conv_net(1)
    x = torch.randn(50, 1, 7, 7, dtype=torch.float64)
    out = cka(a, b, x, kernel="rbf", sigma=0.5, batch_size=16, progress=False)
    expect = rbf_cka(activations(a, x, 0), activations(b, x, 2), 0.5)
    assert out.matrix[0, 1] == pytest.approx(expect, abs=1e-6)
    assert out.settings["sigma"] == 0.5 and out.kernel == "rbf"


def test_the_model_is_left_as_it_came() -> None:
    a = conv_net(0)
    a.train()
    before = {k: v.clone() for k, v in a.state_dict().items()}
    cka(a, conv_net(1), torch.randn(10, 1, 7, 7, dtype=torch.float64), progress=False)
    assert a.training and all(m.training for m in a.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in a.modules())
    assert all(torch.equal(before[k], v) for k, v in a.state_dict().items())


# --- one clear line for bad input --------------------------------------------------------------


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_refusals_are_one_line() -> None:
    a = conv_net(0)
    x = torch.randn(10, 1, 7, 7, dtype=torch.float64)
    with pytest.raises(LayerError, match="did you mean '2'") as e:
        cka(a, a, x, layers_a=["0", "22"], progress=False)
    one_line(e)
    with pytest.raises(DataError, match=r"model A cannot run on inputs of shape \(3, 7, 7\)") as e:
        cka(a, a, torch.randn(4, 3, 7, 7, dtype=torch.float64), progress=False)
    one_line(e)
    wide = nn.Sequential(nn.Conv2d(3, 2, 3)).double()
    with pytest.raises(DataError, match="model B cannot run") as e:
        cka(a, wide, x, layers_a=["0"], layers_b=["0"], progress=False)
    one_line(e)
    with pytest.raises(LayerError, match="no spatial output") as e:
        cka(a, a, x, layers_a=["6"], pool="mean", progress=False)
    one_line(e)
    with pytest.raises(ConfigError, match="rbf"):
        cka(a, a, x, kernel="rbf", estimator="minibatch", progress=False)
    with pytest.raises(ConfigError, match="memory_budget"):
        cka(a, a, x, memory_budget=100, progress=False)
    with pytest.raises(ConfigError, match="estimator"):
        cka(a, a, x, estimator="full", progress=False)  # type: ignore[arg-type]


def test_warnings_do_not_fire_on_healthy_layers() -> None:
    a, b = conv_net(0), conv_net(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CKAWarning)
        cka(a, b, torch.randn(30, 1, 7, 7, dtype=torch.float64), layers_a=["0"], progress=False)
