"""Fuzzing what users hand convlens (issue #11, acceptance): command lines, IDX files,
image files and run configs. No input may end in "unexpected error" or a traceback: the
readers raise their ConvlensError (or return), the command line prints one
``convlens: error: ...`` line or click's usage error.

Hypothesis runs derandomised (the same examples on every run) with bounded example
counts, so the module is deterministic and takes well under a minute.
"""

from __future__ import annotations

import copy
import gzip
import json
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convlens.cli import app, main
from convlens.errors import ConvlensError

FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=300,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# --- the command line ----------------------------------------------------------------------------


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


COMMANDS = dict(_commands(app))
WORDS = st.sampled_from(["", "0", "-1", "7", "1e9", "nan", "abc", "all", "pred", "top3", "conv1", "fc",
                         "1,28,28", "3x", "same", "s=2,p=1", "conv:k=3", "1,2;3,4", "x" * 300, "é", "\x00",
                         "--", "-", "99999999999999999999"])
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)


def _options(cmd: click.Command) -> list[str]:
    return sorted(o for p in cmd.params if isinstance(p, click.Option) for o in p.opts if o not in ("-h", "--help"))


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    path = draw(st.sampled_from(sorted(COMMANDS)))
    opts = _options(COMMANDS[path]) or ["--x"]
    tokens = draw(st.lists(st.one_of(st.sampled_from(opts), WORDS, TEXT), max_size=6))
    return [*path, *tokens]


def _outcome(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out + err


def _assert_handled(code: int, text: str, argv: list[str]) -> None:
    assert "unexpected error" not in text, (argv, text)
    assert "Traceback" not in text, (argv, text)
    assert code in (0, 1, 2), (argv, code, text)


@FUZZ
@given(argv=command_lines())
def test_argument_parsing_of_every_command(argv: list[str], capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # parsing and option conversion only: every command's body is replaced by a no-op, so
    # nothing trains, downloads or writes (the bodies' own parsing is fuzzed below)
    for cmd in COMMANDS.values():
        monkeypatch.setattr(cmd, "callback", lambda **kwargs: None)
    _assert_handled(*_outcome(capsys, argv), argv)


SIZES = st.one_of(WORDS, TEXT, st.integers(-3, 40).map(str),
                  st.tuples(st.integers(-2, 30), st.integers(-2, 30)).map(lambda t: f"{t[0]},{t[1]}"))
LAYER_SPECS = st.one_of(
    WORDS, TEXT,
    st.builds(lambda kind, keys: f"{kind}:{keys}",
              st.sampled_from(["conv", "maxpool", "avgpool", "transpose", "relu", ""]),
              st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["k", "s", "p", "d", "op", "ceil", "in",
                                                                          "out", "g", "q"]),
                                 st.one_of(st.integers(-2, 9).map(str), WORDS)), max_size=4).map(",".join)),
)


@FUZZ
@given(size=SIZES, specs=st.lists(LAYER_SPECS, min_size=1, max_size=3))
def test_conv_shape_parses_its_sizes_and_layers(size: str, specs: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["conv", "shape", "--input-size", size, *(a for s in specs for a in ("--layer", s))]
    _assert_handled(*_outcome(capsys, argv), argv)


MATRICES = st.one_of(WORDS, TEXT, st.lists(st.lists(st.integers(-3, 3).map(str), min_size=1, max_size=4)
                                           .map(",".join), min_size=1, max_size=4).map(";".join))
GEOMETRY = st.one_of(WORDS, st.integers(-1, 4).map(str), st.just("2x1"))


@FUZZ
@given(matrix=MATRICES, kernel=st.one_of(MATRICES, st.sampled_from(["sobel_x", "gaussian", "sobel"])),
       at=st.one_of(st.none(), WORDS, st.just("0,0")), stride=GEOMETRY, padding=GEOMETRY, dilation=GEOMETRY)
def test_conv_explain_parses_its_matrices_and_geometry(matrix: str, kernel: str, at: str | None, stride: str,
                                                       padding: str, dilation: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["conv", "explain", "--matrix", matrix, "--kernel", kernel, "--stride", stride, "--padding", padding,
            "--dilation", dilation, *(["--at", at] if at is not None else [])]
    _assert_handled(*_outcome(capsys, argv), argv)


# --- the readers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


TYPE_BYTES = st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x07, 0xFF])


@st.composite
def idx_bytes(draw: st.DrawFn) -> bytes:
    """Mostly well-formed headers (so the checks past the magic number are reached)."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=64))
    dims = draw(st.lists(st.integers(0, 6), max_size=4))
    ndim = draw(st.one_of(st.just(len(dims)), st.integers(0, 255)))
    head = bytes([draw(st.sampled_from([0, 1])), 0, draw(TYPE_BYTES), ndim])
    head += b"".join(struct.pack(">I", d) for d in dims)
    return head + draw(st.binary(max_size=80))


@FUZZ
@given(data=idx_bytes(), gz=st.booleans(), labels=idx_bytes())
def test_idx_reader_accepts_or_names_the_defect(data: bytes, gz: bool, labels: bytes, scratch: Path) -> None:
    from convlens.data.idx import read_idx, read_idx_pair

    images = scratch / ("images.idx.gz" if gz else "images.idx")
    images.write_bytes(gzip.compress(data) if gz else data)
    (scratch / "labels.idx").write_bytes(labels)
    for read in (lambda: read_idx(images), lambda: read_idx_pair(images, scratch / "labels.idx")):
        try:
            read()
        except ConvlensError as exc:
            assert str(images) in str(exc) or str(scratch / "labels.idx") in str(exc)


def _png(w: int, h: int, mode: str) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (w, h), 128).save(buf, format="PNG")
    return buf.getvalue()


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """Real PNGs, truncated or with bytes flipped, and random data."""
    kind = draw(st.sampled_from(["png", "cut", "flip", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    png = _png(draw(st.integers(1, 40)), draw(st.integers(1, 40)), draw(st.sampled_from(["L", "RGB", "RGBA", "P",
                                                                                           "LA", "I;16", "1"])))
    if kind == "cut":
        return png[: draw(st.integers(0, len(png)))]
    if kind == "flip":
        i = draw(st.integers(0, len(png) - 1))
        return png[:i] + bytes([png[i] ^ draw(st.integers(1, 255))]) + png[i + 1:]
    return png


@FUZZ
@given(data=image_bytes(), channels=st.sampled_from([1, 3]), size=st.tuples(st.integers(1, 32), st.integers(1, 32)),
       invert=st.sampled_from([True, False, "auto"]))
def test_image_reader_accepts_or_names_the_file(data: bytes, channels: int, size: tuple[int, int],
                                                invert: bool | str, scratch: Path) -> None:
    from convlens.data.images import load_image

    path = scratch / "picture.png"
    path.write_bytes(data)
    try:
        x = load_image(path, size=size, channels=channels, invert=invert)  # type: ignore[arg-type]
    except ConvlensError as exc:
        assert str(path) in str(exc)
    else:
        assert x.dtype == torch.uint8 and tuple(x.shape) == (1, channels, *size)


@pytest.fixture(scope="module")
def run_template(scratch: Path) -> tuple[Path, dict[str, Any]]:
    from convlens.models import build_model, get_config
    from convlens.models.run import DataSpec, RunConfig, library_versions, save_run

    data = DataSpec("mnist", "a test", tuple("0123456789"), (0.1307,), (0.3081,))
    config = RunConfig(get_config("seed-cnn"), data, seed=0, train={}, versions=library_versions())
    torch.manual_seed(0)
    path = save_run(scratch / "run", config, build_model("seed-cnn").state_dict(), {"epochs": []})
    return path, json.loads((path / "config.json").read_text())


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=8)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@st.composite
def config_texts(draw: st.DrawFn, template: dict[str, Any]) -> bytes:
    """The run's real config with one value replaced or removed, random JSON, or bytes."""
    kind = draw(st.sampled_from(["replace", "replace", "remove", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=100))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    config = copy.deepcopy(template)
    where = draw(st.sampled_from([p for p in _paths(config) if p]))
    parent = config
    for key in where[:-1]:
        parent = parent[key]
    if kind == "remove":
        del parent[where[-1]]
    else:
        parent[where[-1]] = draw(JSON | st.integers(-1, 3) | st.integers(10**6, 10**12))
    return json.dumps(config).encode()


@FUZZ
@given(data=st.data())
def test_config_reader_accepts_or_names_the_run(data: st.DataObject, run_template: tuple[Path, dict[str, Any]],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from convlens.models.run import load_run

    path, template = run_template
    original = (path / "config.json").read_bytes()
    text = data.draw(config_texts(template))
    (path / "config.json").write_bytes(text)
    try:
        try:
            load_run(path)
        except ConvlensError as exc:
            assert str(path) in str(exc)
        if data.draw(st.booleans()):  # and the command line shows it in one line
            _assert_handled(*_outcome(capsys, ["layers", str(path)]), ["layers", str(path), text.decode(errors="replace")])
    finally:
        (path / "config.json").write_bytes(original)
