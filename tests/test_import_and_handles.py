"""Foreign weights enter only through weights_only loading; RUN and --model open the same way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import convlens
from convlens.errors import ConfigError, RunError
from convlens.models.external import ModelLoadError
from convlens.models.handle import open_model, parse_shape
from convlens.models.run import import_weights


class _Evil:
    # runs os.getenv('PWNED') if unpickled without weights_only; not print, which Ray replaces
    # in a process where it runs (the pickle would then name Ray's function)
    def __reduce__(self):
        return (os.getenv, ("PWNED",))


def test_import_weights_round_trip_is_bit_identical(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = convlens.build_model("seed-cnn").eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    run = import_weights(tmp_path / "w.pt", tmp_path / "run")
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(run.model(x), model(x))
    assert run.config.train["imported_from"].endswith("w.pt")
    assert not run.model.training


def test_import_refuses_pickled_code_and_writes_nothing(tmp_path: Path) -> None:
    torch.save({"conv1.weight": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelLoadError, match="weights_only=True"):
        import_weights(tmp_path / "evil.pt", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_pickle_refusal_names_what_was_found_and_never_advises_weights_only_false(tmp_path: Path) -> None:
    # issue #11, finding 6: torch's text, cut at 200 characters, ended by advising
    # "Re-running `torch.load` with `weights_only` set to `False`" without its warning
    torch.save({"conv1.weight": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelLoadError) as info:
        import_weights(tmp_path / "evil.pt", tmp_path / "run")
    message = str(info.value)
    assert "False" not in message and "trust" not in message
    assert "Unsupported global: GLOBAL posix.getenv" in message or "GLOBAL os.getenv" in message  # what torch found stays in the line
    assert "torch.save(model.state_dict(), path)" in message


def test_import_names_missing_tensors(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(10, 1568)}, tmp_path / "part.pt")
    with pytest.raises(RunError, match=r"missing 5: conv1\.weight"):
        import_weights(tmp_path / "part.pt", tmp_path / "run")


def test_cli_import_of_evil_file_prints_one_line(tmp_path: Path) -> None:
    torch.save({"x": _Evil()}, tmp_path / "evil.pt")
    res = subprocess.run(
        [sys.executable, "-m", "convlens", "import-weights", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "r")],
        capture_output=True, text=True,
    )
    assert res.returncode == 1
    assert "PWNED" not in res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("convlens: error:")


def test_open_model_from_spec_and_from_run_agree(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = convlens.build_model("seed-cnn").eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    import_weights(tmp_path / "w.pt", tmp_path / "run")
    a = open_model(tmp_path / "run")
    b = open_model(spec="tests.zoo:SeedCNN", weights=tmp_path / "w.pt")
    assert a.input_shape == b.input_shape == (1, 28, 28)
    assert a.data.mean == b.data.mean == (0.1307,)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(a.model(x), b.model(x))
    assert a.figures_dir() == tmp_path / "run" / "figures"
    assert b.figures_dir() == Path("figures")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({}, "no model given"), ({"run": "r", "spec": "a:b"}, "not both"), ({"run": "r", "weights": "w.pt"}, "--weights goes with --model")],
)
def test_open_model_argument_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_model(**kwargs)


def test_parse_shape() -> None:
    assert parse_shape("3,32,32") == (3, 32, 32)
    assert parse_shape("1x28x28") == (1, 28, 28)
    for bad in ("1,28", "a,b,c", "0,28,28"):
        with pytest.raises(ConfigError, match="C,H,W"):
            parse_shape(bad)


def _light_import(code: str) -> list[str]:
    """The heavy modules that ``code`` loads in a fresh interpreter."""
    probe = f"import sys; {code}; print(*(m for m in ('torch', 'matplotlib', 'PIL', 'rich') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_conv_imports_numpy_only() -> None:
    assert _light_import("import convlens.conv") == []


def test_version_comes_from_the_package_metadata_and_loads_no_torch() -> None:
    import importlib.metadata

    from convlens.models.run import library_versions

    assert convlens.__version__ == importlib.metadata.version("convlens")
    assert library_versions()["convlens"] == convlens.__version__
    assert _light_import("import convlens; convlens.__version__") == []


def test_version_of_an_uninstalled_source_tree_is_read_from_its_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata
    import re

    from convlens import _version

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    _version.version.cache_clear()
    try:
        pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
        want = re.search(r'^version = "(.+)"', pyproject, re.M)
        assert want is not None and _version.version() == want.group(1)
    finally:
        _version.version.cache_clear()


@pytest.mark.parametrize("name", ["train", "diagnose"])
def test_a_package_named_like_its_function_calls_the_function_after_its_modules_are_imported(name: str) -> None:
    # importing a sub-module binds the package to convlens.<name>; calling it must still
    # reach the function (a fresh interpreter, so no earlier import decides the binding)
    probe = (f"import convlens, convlens.{name}.{'loop' if name == 'train' else 'core'} as m; "
             f"f = getattr(m, {name!r}); import inspect; "
             f"print(type(convlens.{name}).__name__, callable(convlens.{name}), "
             f"inspect.signature(f) == inspect.signature(getattr(__import__('convlens.{name}').{name}, {name!r})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["CallablePackage", "True", "True"]


def test_calling_the_package_calls_the_function() -> None:
    import convlens.train.loop  # binds the package

    with pytest.raises(TypeError, match="missing"):
        convlens.train()  # type: ignore[call-arg]  # the function's own signature check, not "module is not callable"
