"""Mergeable accumulators and partitioned passes, without Ray.

Oracles: a one-shot NumPy float64 computation over all the values (moments), a brute-force
lexicographic sort over all (score, id) pairs (top-k), and the in-process pass itself
(a pass computed as partials over any split, merged in any order).
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convlens.inspect.accumulate import Moments, TopKHeap, topk_order
from convlens.inspect.executors import partitions
from convlens.inspect.stats import StatsPass
from convlens.inspect.topk import TopKPass

FAST = settings(max_examples=60, deadline=None)


@st.composite
def split_values(draw: st.DrawFn) -> tuple[np.ndarray, list[int], int]:
    """Values (B, C, P), sorted split points over B and a seed for the merge order."""
    b = draw(st.integers(1, 12))
    c = draw(st.integers(1, 3))
    p = draw(st.integers(1, 5))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e4]))
    offset = draw(st.sampled_from([0.0, 1.0, -50.0, 1e3]))
    seed = draw(st.integers(0, 2**16))
    v = np.random.default_rng(seed).standard_normal((b, c, p)) * scale + offset
    cuts = sorted(draw(st.sets(st.integers(1, b - 1), max_size=b - 1))) if b > 1 else []
    return v, cuts, seed


@FAST
@given(split_values())
def test_moments_merged_over_any_split_match_one_shot_float64(case: tuple[np.ndarray, list[int], int]) -> None:
    v, cuts, seed = case
    pieces = [Moments.of_rows(torch.from_numpy(chunk)) for chunk in np.split(v, cuts, axis=0)]
    random.Random(seed).shuffle(pieces)  # any merge order
    merged = Moments.empty(v.shape[1])
    for piece in pieces:
        merged = merged.merge(piece)
    flat = v.transpose(1, 0, 2).reshape(v.shape[1], -1)  # (C, B*P), float64
    assert merged.n == flat.shape[1]
    np.testing.assert_allclose(merged.mean.numpy(), flat.mean(axis=1), rtol=1e-9, atol=1e-12 * np.abs(flat).max())
    np.testing.assert_allclose(merged.var.numpy(), flat.var(axis=1), rtol=1e-9, atol=1e-12 * flat.var(axis=1).max())
    np.testing.assert_array_equal(merged.min.numpy(), flat.min(axis=1))
    np.testing.assert_array_equal(merged.max.numpy(), flat.max(axis=1))


def test_moments_of_an_empty_part_change_nothing() -> None:
    m = Moments.of_rows(torch.tensor([[[1.0, 3.0]]]))
    both = m.merge(Moments.empty(1))
    assert both.n == 2 and float(both.mean[0]) == 2.0 and float(both.var[0]) == 1.0
    assert float(Moments.empty(1).merge(m).m2[0]) == 2.0


def _brute_topk(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Per row, the ids of the k best by (score descending, id ascending)."""
    out = []
    for s, i in zip(scores, ids, strict=True):
        order = np.lexsort((i, -s))  # last key first: by -score, then by id
        out.append(i[order][:k])
    return np.stack(out)


@FAST
@given(st.integers(1, 40), st.integers(1, 6), st.integers(0, 2**16), st.data())
def test_topk_heaps_merged_over_any_split_match_brute_force(n: int, k: int, seed: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(3, n)).astype(np.float32)  # few distinct values: many ties
    ids = np.broadcast_to(rng.permutation(n), (3, n)).copy()
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, n - 1)), max_size=max(0, n - 1)))) if n > 1 else []
    heaps = [TopKHeap.of(torch.from_numpy(s.copy()), torch.from_numpy(i.copy()), k,
                         {"where": torch.from_numpy(i.copy())[..., None] * 10})
             for s, i in zip(np.split(scores, cuts, axis=1), np.split(ids, cuts, axis=1), strict=True)]
    random.Random(seed).shuffle(heaps)
    merged = heaps[0]
    for h in heaps[1:]:
        merged = merged.merge(h)
    want = _brute_topk(scores, ids, k)
    got = merged.ids[:, : min(k, n)].numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(merged.payload["where"][:, : min(k, n), 0].numpy(), want * 10)  # payload follows
    assert (merged.ids[:, n:] == -1).all()  # empty slots stay last


def test_topk_order_puts_empty_slots_after_real_entries_of_any_score() -> None:
    values = torch.tensor([[float("-inf"), float("-inf"), 1.0]])
    ids = torch.tensor([[-1, 7, 3]])
    assert topk_order(values, ids, 3).tolist() == [[2, 1, 0]]


@pytest.mark.parametrize(("n", "parts", "align"), [(10, 3, 2), (1500, 4, 256), (7, 10, 1), (5, 2, 8), (0, 3, 4)])
def test_partitions_are_runs_of_whole_batches_covering_the_data(n: int, parts: int, align: int) -> None:
    spans = partitions(n, parts, align)
    assert [i for a, b in spans for i in range(a, b)] == list(range(n))
    assert len(spans) <= parts
    assert all(a % align == 0 for a, _ in spans)


def _tiny() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())


@settings(max_examples=8, deadline=None)
@given(st.sets(st.integers(1, 9), max_size=5), st.integers(0, 100))
def test_a_pass_in_partials_merged_in_any_order_is_the_in_process_pass(cut_blocks: set[int], seed: int) -> None:
    """Partitions of whole batches (batch size 4), computed apart and merged in a shuffled
    order: counts and top-k identical, moments to float64 rounding."""
    model = _tiny()
    x = torch.randn(40, 1, 7, 7, generator=torch.Generator().manual_seed(seed))
    x[5] = x[9]  # a tie: the same input twice
    cuts = [0, *sorted(4 * c for c in cut_blocks), 40]
    spans = list(itertools.pairwise(cuts))
    random.Random(seed).shuffle(spans)
    for pass_ in (StatsPass(["1", "3"], batch_size=4), TopKPass(["3"], 3, None, True, None, 2**20, batch_size=4)):
        whole = pass_.finish(pass_.partial(model, x, None, False), model)
        parts = [pass_.partial(model, x, span, False) for span in spans]
        merged = parts[0]
        for p in parts[1:]:
            merged = pass_.merge(merged, p)
        split = pass_.finish(merged, model)
        assert split.n_inputs == whole.n_inputs == 40
        for key in whole:
            a, b = whole[key], split[key]
            if isinstance(pass_, StatsPass):
                assert torch.equal(a.silent_fraction, b.silent_fraction)
                assert torch.equal(a.zero_fraction, b.zero_fraction)
                assert torch.equal(a.min, b.min) and torch.equal(a.max, b.max)
                torch.testing.assert_close(a.mean, b.mean, rtol=1e-9, atol=1e-12)
                torch.testing.assert_close(a.std, b.std, rtol=1e-9, atol=1e-12)
            else:
                assert torch.equal(a.indices, b.indices) and torch.equal(a.values, b.values)
                assert torch.equal(a.locations, b.locations)
                assert torch.equal(a.crops.nan_to_num(7.0), b.crops.nan_to_num(7.0))
