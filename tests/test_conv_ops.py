"""The NumPy reference operations against torch.nn.functional (the oracle).

Hypothesis draws random shapes, strides, paddings, dilations, groups, padding modes
and dtypes, including invalid ones. For every draw: PyTorch refuses ⇔ convlens refuses
(with a ConfigError, which is a ValueError); otherwise the values agree (float64 within
1e-5 relative, in practice ~1e-15) and ``output_size`` equals PyTorch's output shape.

Example counts come from a settings profile: ``conv-ci`` (default, ≥ 500 examples in
all across this file) or ``conv-thorough`` (CONVLENS_CONV_PROFILE=conv-thorough).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from _helpers import CONV_PROFILE
from convlens.conv import avg_pool2d, conv2d, conv_transpose2d, max_pool2d, output_size, pad2d
from convlens.errors import ConfigError

PROFILE = CONV_PROFILE
TORCH_REFUSALS = (RuntimeError, ValueError, TypeError, IndexError)
DTYPES = {"float32": (np.float32, torch.float32), "float64": (np.float64, torch.float64)}


def _tol(dtype: str) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 1e-9} if dtype == "float64" else {"rtol": 1e-4, "atol": 1e-4}


def _close(ours: np.ndarray, ref: torch.Tensor, dtype: str) -> None:
    expected = ref.numpy()
    assert ours.shape == expected.shape
    assert ours.dtype == expected.dtype
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    tol = _tol(dtype)
    np.testing.assert_allclose(ours, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


def _torch(fn: Any, *arrays: np.ndarray | None) -> tuple[Any, BaseException | None]:
    """Run ``fn`` on the arrays as tensors: (result, None) or (None, the refusal).

    Whether a configuration is refused is decided in float64, PyTorch's reference
    CPU path: float32 may go through oneDNN, whose checks differ in corner cases
    (e.g. it returns a 1×0 map from a grouped transposed convolution where the
    reference path refuses). The values are then computed in the drawn dtype.
    """

    def tensors(as64: bool) -> list[torch.Tensor | None]:
        return [None if a is None else torch.from_numpy(a.astype(np.float64) if as64 else a) for a in arrays]

    with torch.no_grad():
        try:
            fn(*tensors(True))
        except TORCH_REFUSALS as exc:
            return None, exc
        return fn(*tensors(False)), None


def _ours(fn: Any) -> tuple[Any, ConfigError | None]:
    try:
        return fn(), None
    except ConfigError as exc:
        assert isinstance(exc, ValueError)
        return None, exc


def _same_verdict(ref_err: BaseException | None, our_err: ConfigError | None, case: Any) -> None:
    assert (ref_err is None) == (our_err is None), (
        f"torch {'refused: ' + str(ref_err).splitlines()[0] if ref_err else 'accepted'}; "
        f"convlens {'refused: ' + str(our_err) if our_err else 'accepted'}; case {case}"
    )


# small draws, biased towards valid values but with the invalid ones PyTorch refuses
POS = st.sampled_from([1, 1, 1, 2, 2, 3, 0, -1])
NONNEG = st.sampled_from([0, 0, 1, 1, 2, 3, -1])


def _pair(values: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    return st.one_of(values, st.tuples(values, values), st.tuples(values))


@st.composite
def conv_cases(draw: st.DrawFn) -> dict[str, Any]:
    groups = draw(st.sampled_from([1, 1, 2, 3, 0]))
    g = max(groups, 1)
    cg, cog = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    c_in = cg * g + draw(st.sampled_from([0, 0, 0, 0, 0, 1]))
    c_out = cog * g + draw(st.sampled_from([0, 0, 0, 0, 0, 1]))
    return {
        "dtype": draw(st.sampled_from(list(DTYPES))),
        "x_shape": (
            *(() if draw(st.integers(0, 5)) == 0 else (draw(st.integers(1, 2)),)),
            c_in,
            draw(st.integers(1, 9)),
            draw(st.integers(1, 9)),
        ),
        "w_shape": (c_out, cg, draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        "bias": draw(st.sampled_from(["none", "ok", "ok", "wrong"])),
        "stride": draw(_pair(POS)),
        "padding": draw(st.one_of(_pair(NONNEG), st.sampled_from(["same", "valid"]))),
        "dilation": draw(_pair(POS)),
        "groups": groups,
        "padding_mode": draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"])),
        "flip": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _arrays(case: dict[str, Any], *shapes: tuple[int, ...]) -> list[np.ndarray]:
    rng = np.random.default_rng(case["seed"])
    np_dtype = DTYPES[case["dtype"]][0]
    return [rng.standard_normal(s).astype(np_dtype) for s in shapes]


def _torch_conv(case: dict[str, Any], x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    if case["flip"]:
        w = torch.flip(w, dims=(-2, -1))
    if case["padding_mode"] == "zeros":
        return F.conv2d(x, w, b, case["stride"], case["padding"], case["dilation"], case["groups"])
    # nn.Conv2d mis-expands 1-tuples for non-zero padding modes (it pads the width only,
    # or F.pad fails); F.conv2d and convlens read (v,) as (v, v), so pass v instead.
    stride, padding, dilation = (
        v[0] if isinstance(v, tuple) and len(v) == 1 else v
        for v in (case["stride"], case["padding"], case["dilation"])
    )
    m = nn.Conv2d(
        x.shape[-3], w.shape[0], tuple(w.shape[2:]), stride=stride, padding=padding,
        dilation=dilation, groups=case["groups"], bias=b is not None,
        padding_mode=case["padding_mode"], dtype=w.dtype,
    )
    m.weight = nn.Parameter(w)
    if b is not None:
        m.bias = nn.Parameter(b)
    return m(x)


@PROFILE
@given(conv_cases())
def test_conv2d_matches_torch(case: dict[str, Any]) -> None:
    c_out = case["w_shape"][0]
    n_bias = c_out + (1 if case["bias"] == "wrong" else 0)
    x, w, b = _arrays(case, case["x_shape"], case["w_shape"], (n_bias,))
    bias = None if case["bias"] == "none" else b
    ref, ref_err = _torch(lambda *t: _torch_conv(case, *t), x, w, bias)
    ours, our_err = _ours(lambda: conv2d(
        x, w, bias, stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
        groups=case["groups"], padding_mode=case["padding_mode"], flip=case["flip"],
    ))
    _same_verdict(ref_err, our_err, case)
    if ref is None:
        return
    _close(ours, ref, case["dtype"])
    size = output_size(
        case["x_shape"][-2:], case["w_shape"][2:], case["stride"], case["padding"], case["dilation"],
        padding_mode=case["padding_mode"],
    )
    assert size == tuple(ref.shape[-2:])


@st.composite
def transpose_cases(draw: st.DrawFn) -> dict[str, Any]:
    groups = draw(st.sampled_from([1, 1, 2, 3, 0]))
    g = max(groups, 1)
    cig, cog = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    c_in = cig * g
    w_rows = c_in + draw(st.sampled_from([0, 0, 0, 0, 0, 1, -1]))
    return {
        "dtype": draw(st.sampled_from(list(DTYPES))),
        "x_shape": (
            *(() if draw(st.integers(0, 5)) == 0 else (draw(st.integers(1, 2)),)),
            c_in,
            draw(st.integers(1, 6)),
            draw(st.integers(1, 6)),
        ),
        "w_shape": (max(w_rows, 1), cog, draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        "bias": draw(st.sampled_from(["none", "ok", "ok", "wrong"])),
        "stride": draw(_pair(POS)),
        "padding": draw(_pair(NONNEG)),
        "output_padding": draw(_pair(st.sampled_from([0, 0, 0, 1, 1, 2, -1]))),
        "dilation": draw(_pair(POS)),
        "groups": groups,
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@PROFILE
@given(transpose_cases())
def test_conv_transpose2d_matches_torch(case: dict[str, Any]) -> None:
    c_out = case["w_shape"][1] * max(case["groups"], 1)
    n_bias = c_out + (1 if case["bias"] == "wrong" else 0)
    x, w, b = _arrays(case, case["x_shape"], case["w_shape"], (n_bias,))
    bias = None if case["bias"] == "none" else b
    args = (case["stride"], case["padding"], case["output_padding"], case["groups"], case["dilation"])
    ref, ref_err = _torch(lambda *t: F.conv_transpose2d(*t, *args), x, w, bias)
    ours, our_err = _ours(lambda: conv_transpose2d(x, w, bias, *args))
    _same_verdict(ref_err, our_err, case)
    if ref is None:
        return
    _close(ours, ref, case["dtype"])
    size = output_size(
        case["x_shape"][-2:], case["w_shape"][2:], case["stride"], case["padding"], case["dilation"],
        kind="transpose", output_padding=case["output_padding"],
    )
    assert size == tuple(ref.shape[-2:])


@st.composite
def pool_cases(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "dtype": draw(st.sampled_from(list(DTYPES))),
        "values": draw(st.sampled_from(["normal", "ties"])),
        "x_shape": (
            *(() if draw(st.integers(0, 5)) == 0 else (draw(st.integers(1, 2)),)),
            draw(st.integers(1, 3)),
            draw(st.integers(1, 9)),
            draw(st.integers(1, 9)),
        ),
        "kernel_size": draw(_pair(st.sampled_from([1, 2, 2, 3, 3, 4, 0]))),
        "stride": draw(st.one_of(st.none(), st.just(()), _pair(POS))),
        "padding": draw(_pair(NONNEG)),
        "dilation": draw(_pair(POS)),
        "ceil_mode": draw(st.booleans()),
        "count_include_pad": draw(st.booleans()),
        "divisor_override": draw(st.sampled_from([None, None, None, 3, -2, 0])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _pool_input(case: dict[str, Any]) -> np.ndarray:
    rng = np.random.default_rng(case["seed"])
    if case["values"] == "ties":  # many equal values: exercises the tie-breaking of indices
        x = rng.integers(0, 3, case["x_shape"]).astype(float)
    else:
        x = rng.standard_normal(case["x_shape"])
    return x.astype(DTYPES[case["dtype"]][0])


@PROFILE
@given(pool_cases())
def test_max_pool2d_matches_torch(case: dict[str, Any]) -> None:
    x = _pool_input(case)
    args = (case["kernel_size"], case["stride"], case["padding"], case["dilation"], case["ceil_mode"])
    ref, ref_err = _torch(lambda t: F.max_pool2d(t, *args, return_indices=True), x)
    ours, our_err = _ours(lambda: max_pool2d(x, *args, return_indices=True))
    _same_verdict(ref_err, our_err, case)
    if ref is None:
        return
    _close(ours[0], ref[0], case["dtype"])
    np.testing.assert_array_equal(ours[1], ref[1].numpy())
    np.testing.assert_array_equal(max_pool2d(x, *args), ours[0])
    size = output_size(
        case["x_shape"][-2:], case["kernel_size"], case["stride"] if case["stride"] != () else None,
        case["padding"], case["dilation"], kind="pool", ceil_mode=case["ceil_mode"],
    )
    assert size == tuple(ref[0].shape[-2:])


@PROFILE
@given(pool_cases())
def test_avg_pool2d_matches_torch(case: dict[str, Any]) -> None:
    x = _pool_input(case)
    args = (case["kernel_size"], case["stride"], case["padding"], case["ceil_mode"],
            case["count_include_pad"], case["divisor_override"])
    ref, ref_err = _torch(lambda t: F.avg_pool2d(t, *args), x)
    ours, our_err = _ours(lambda: avg_pool2d(x, *args))
    _same_verdict(ref_err, our_err, case)
    if ref is None:
        return
    _close(ours, ref, case["dtype"])
    size = output_size(
        case["x_shape"][-2:], case["kernel_size"], case["stride"] if case["stride"] != () else None,
        case["padding"], kind="pool", ceil_mode=case["ceil_mode"],
    )
    assert size == tuple(ref.shape[-2:])


# ------------------------------------------------------------------ fixed examples
def test_true_convolution_is_the_textbook_formula() -> None:
    """flip=True equals Output(i, j) = Σm Σn I(i−m, j−n)·K(m, n), evaluated literally."""
    rng = np.random.default_rng(0)
    image, kernel = rng.standard_normal((6, 7)), rng.standard_normal((3, 2))
    kh, kw = kernel.shape
    # 'valid' part of the full convolution: i runs over kh-1 .. H-1
    literal = np.array([
        [sum(image[i - m, j - n] * kernel[m, n] for m in range(kh) for n in range(kw))
         for j in range(kw - 1, image.shape[1])]
        for i in range(kh - 1, image.shape[0])
    ])
    ours = conv2d(image[None, None], kernel[None, None], flip=True)[0, 0]
    np.testing.assert_allclose(ours, literal, rtol=1e-12)
    # cross-correlation differs from it unless the kernel is symmetric
    assert not np.allclose(conv2d(image[None, None], kernel[None, None])[0, 0], literal)


def test_cross_correlation_by_hand() -> None:
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])
    # out(i, j) = x(i, j) - x(i+1, j+1) = -5 everywhere
    np.testing.assert_array_equal(conv2d(x, w, bias=[2.0])[0, 0], np.full((3, 3), -3.0))


def test_float32_stays_float32_and_ints_are_computed_in_float64() -> None:
    x = np.ones((1, 1, 3, 3), dtype=np.float32)
    assert conv2d(x, np.ones((1, 1, 2, 2), dtype=np.float32)).dtype == np.float32
    out = conv2d(np.ones((1, 1, 3, 3), dtype=np.uint8), np.ones((1, 1, 2, 2), dtype=np.int64))
    assert out.dtype == np.float64 and out[0, 0, 0, 0] == 4.0


@pytest.mark.parametrize(
    ("shape", "stride", "groups", "mode", "path"),
    [
        ((2, 6, 30, 31), 1, 1, "zeros", "_correlate_rows"),  # few padding columns
        ((2, 6, 30, 31), 1, 3, "reflect", "_correlate_rows"),
        ((3, 4, 7, 6), 1, 2, "circular", "_correlate_nhwc"),  # many padding columns
        ((3, 4, 17, 16), 2, 1, "replicate", "_correlate_nhwc"),  # strided
    ],
)
def test_both_conv_paths_at_larger_sizes(
    shape: tuple[int, ...], stride: int, groups: int, mode: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import convlens.conv.ops as ops

    calls: list[str] = []
    original = getattr(ops, path)
    monkeypatch.setattr(ops, path, lambda *a: calls.append(path) or original(*a))
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((6, shape[1] // groups, 3, 2))
    b = rng.standard_normal(6)
    m = nn.Conv2d(shape[1], 6, (3, 2), stride=stride, padding=(2, 1), dilation=(1, 2), groups=groups,
                  padding_mode=mode, dtype=torch.float64)
    m.weight, m.bias = nn.Parameter(torch.from_numpy(w)), nn.Parameter(torch.from_numpy(b))
    with torch.no_grad():
        ref = m(torch.from_numpy(x))
    ours = conv2d(x, w, b, stride=stride, padding=(2, 1), dilation=(1, 2), groups=groups, padding_mode=mode)
    _close(ours, ref, "float64")
    assert calls == [path]


def test_batches_larger_than_the_im2col_budget_are_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    import convlens.conv.ops as ops

    monkeypatch.setattr(ops, "_IM2COL_BUDGET", 100)
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((5, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1)
    _close(conv2d(x, w, padding=1), ref, "float64")


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_pad2d_matches_torch_pad(mode: str) -> None:
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5))
    pad = (1, 2, 3, 0)  # top, bottom, left, right; torch wants (left, right, top, bottom)
    ref = F.pad(torch.from_numpy(x), (pad[2], pad[3], pad[0], pad[1]), mode="constant" if mode == "zeros" else mode)
    np.testing.assert_array_equal(pad2d(x, pad, mode), ref.numpy())


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), stride=0), "stride"),
        (lambda: conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 7, 7))), "padded input is only 5×5"),
        (lambda: conv2d(np.ones((1, 4, 5, 5)), np.ones((6, 2, 3, 3)), groups=3), "groups=3"),
        (lambda: conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), stride=2, padding="same"), "'same' needs stride 1"),
        (lambda: conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), padding=5, padding_mode="reflect"), "reflect"),
        (lambda: conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), padding_mode="mirror"), "padding_mode"),
        (lambda: max_pool2d(np.ones((1, 1, 5, 5)), 3, padding=2), "half the kernel size"),
        (lambda: conv_transpose2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), output_padding=1), "output_padding"),
        (lambda: avg_pool2d(np.ones((1, 1, 5, 5)), 2, divisor_override=0), "divisor_override"),
    ],
)
def test_refusals_name_the_parameter_and_rule(call: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words) as info:
        call()
    assert isinstance(info.value, ConfigError)
    assert "\n" not in str(info.value)


def test_threads_do_not_share_work_buffers() -> None:
    """conv2d reuses per-thread work buffers; concurrent calls must not see each other's."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(4)
    jobs = [
        (rng.standard_normal((3, c, 12 + c, 11)), rng.standard_normal((4, c, 3, 3)), stride)
        for c in (1, 2, 3, 5) for stride in (1, 2)
    ]
    expected = [F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=s, padding=1).numpy() for x, w, s in jobs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            results = list(pool.map(lambda job: conv2d(job[0], job[1], stride=job[2], padding=1), jobs))
            for got, want in zip(results, expected, strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
