"""The Ray engine gives the in-process results: equivalence over 1, 2 and 4 partitions
handed out in a shuffled order, the model rebuilt from a run directory or a
module:factory, a worker killed in mid-pass, and the one-line refusals.

One local cluster (``ray_cluster``, 2 CPUs) serves the session; one engine (two actors,
kept warm) serves this module. The in-process oracle runs with one thread, as each Ray
worker does, so every batch's activations are the same numbers on both sides.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import convlens
from _helpers import cli_call, mnist_path, one_thread, untrained_run
from convlens.errors import ConfigError
from convlens.inspect.executors import EngineError, RayEngine, model_source

N = 600  # test images streamed (first 600 of the test split)
LAYERS = ["conv1", "conv2"]


@pytest.fixture(scope="module")
def engine(ray_cluster: Any) -> Iterator[RayEngine]:
    with RayEngine(actors=2) as eng:
        yield eng


@pytest.fixture(scope="module")
def data() -> Any:
    return convlens.load_dataset("mnist", "test", data_dir=mnist_path()).subset(range(N))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return convlens.build_model("seed-cnn")


@pytest.fixture(scope="module")
def oracle(model: nn.Module, data: Any) -> dict[str, Any]:
    with one_thread():
        return {
            "stats": convlens.channel_stats(model, data, LAYERS, batch_size=64, progress=False),
            "topk": convlens.topk_examples(model, data, "conv2", k=6, batch_size=64, progress=False),
        }


def assert_same_stats(a: Any, b: Any) -> None:
    assert a.n_inputs == b.n_inputs and list(a) == list(b)
    for key in a:
        x, y = a[key], b[key]
        assert x.n_inputs == y.n_inputs
        assert torch.equal(x.silent_fraction, y.silent_fraction)  # exact counts over exact totals
        assert torch.equal(x.zero_fraction, y.zero_fraction)
        assert torch.equal(x.min, y.min) and torch.equal(x.max, y.max)
        for f in ("mean", "std"):
            torch.testing.assert_close(getattr(x, f), getattr(y, f), rtol=1e-9, atol=0.0)


def assert_same_topk(a: Any, b: Any) -> None:
    assert a.n_inputs == b.n_inputs
    for key in a:
        x, y = a[key], b[key]
        assert x.channels == y.channels
        assert torch.equal(x.indices, y.indices)  # same inputs, in the same order (ties by index)
        assert torch.equal(x.values, y.values) and torch.equal(x.locations, y.locations)
        assert torch.equal(x.crops.nan_to_num(9.0), y.crops.nan_to_num(9.0))
        assert (x.filters is None) == (y.filters is None)


@pytest.mark.parametrize(("partitions", "shuffle"), [(1, None), (2, 1), (4, 3)])
def test_stats_and_topk_on_ray_equal_in_process(engine: RayEngine, model: nn.Module, data: Any,
                                                oracle: dict[str, Any], partitions: int, shuffle: int | None) -> None:
    engine.partitions, engine.shuffle = partitions, shuffle
    stats = convlens.channel_stats(model, data, LAYERS, batch_size=64, engine=engine)
    assert engine.last_run["merged"] == partitions == len(engine.last_run["partitions"])
    if partitions == 4:
        assert engine.last_run["order"] != sorted(engine.last_run["order"])  # really handed out shuffled
    assert_same_stats(oracle["stats"], stats)
    top = convlens.topk_examples(model, data, "conv2", k=6, batch_size=64, engine=engine)
    assert_same_topk(oracle["topk"], top)


def test_faithfulness_on_ray_equals_in_process(engine: RayEngine, model: nn.Module, data: Any) -> None:
    kw: dict[str, Any] = {"n": 36, "steps": 4, "sanity_images": 4, "batch_size": 8, "seed": 2}
    with one_thread():
        want = convlens.faithfulness(model, data, ["gradcam", "saliency"], **kw)
    engine.partitions, engine.shuffle = 4, 5
    got = convlens.faithfulness(model, data, ["gradcam", "saliency"], engine=engine, **kw)
    assert got.n_images == want.n_images == 36
    assert engine.last_run["partitions"] == [(0, 8), (8, 16), (16, 24), (24, 36)]  # whole batches of 8
    for a, b in zip(want.rows(), got.rows(), strict=True):
        assert a.keys() == b.keys() and a["method"] == b["method"] and a["flagged"] == b["flagged"]
        for f in ("deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence",
                  "randomisation_correlation"):
            assert b[f] == pytest.approx(a[f], rel=1e-9, abs=0.0)
    for s in want.scores:
        torch.testing.assert_close(want.scores[s].deletion, got.scores[s].deletion, rtol=1e-9, atol=0.0)


def test_a_worker_killed_mid_pass_is_retried_and_counted_once(engine: RayEngine, model: nn.Module, data: Any,
                                                             oracle: dict[str, Any], tmp_path: Path) -> None:
    marker = tmp_path / "killed"

    class KillOnce(nn.Module):  # local class: sent to the workers by value
        """The model, but the worker running its third forward pass (the second batch of a
        partition) dies at once, the first time only."""

        def __init__(self, inner: nn.Module, marker: str) -> None:
            super().__init__()
            self.inner, self.marker, self.calls = inner, marker, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls == 3 and not os.path.exists(self.marker):
                Path(self.marker).write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return self.inner(x)  # type: ignore[no-any-return]

    killer = KillOnce(model, str(marker))
    layers = [f"inner.{name}" for name in LAYERS]
    engine.partitions, engine.shuffle = 4, 0
    stats = convlens.channel_stats(killer, data, layers, batch_size=64, engine=engine)
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker died
    assert engine.last_run["merged"] == 4
    renamed = {key.removeprefix("inner."): value for key, value in stats.layers.items()}
    assert_same_stats(oracle["stats"], type(stats)(renamed, stats.n_inputs))


def test_run_directory_and_factory_models_are_rebuilt_by_the_workers(engine: RayEngine, data: Any,
                                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    run = convlens.load_run(untrained_run(tmp_path / "run", mnist_path()))
    assert model_source(run).kind == "run"
    engine.partitions, engine.shuffle = 2, 1
    with one_thread():
        want = convlens.channel_stats(run.model, data, "conv2", batch_size=64, progress=False)
    assert_same_stats(want, convlens.channel_stats(run, data, "conv2", batch_size=64, engine=engine))

    # module:factory from the working directory, weights from the run
    (tmp_path / "mynets.py").write_text(
        "import convlens\n\ndef make():\n    return convlens.build_model('seed-cnn')\n")
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(run.path / "model.safetensors")), str(tmp_path / "w.safetensors"))
    monkeypatch.chdir(tmp_path)
    from convlens.models.handle import open_model

    handle = open_model(spec="mynets:make", weights=tmp_path / "w.safetensors")
    assert model_source(handle).kind == "factory"
    assert_same_stats(want, convlens.channel_stats(handle, data, "conv2", batch_size=64, engine=engine))


def test_a_model_the_workers_cannot_import_is_one_clear_line(engine: RayEngine, data: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "driver_only_nets.py").write_text(
        "from torch import nn\n\nclass Net(nn.Sequential):\n"
        "    def __init__(self):\n        super().__init__(nn.Conv2d(1, 2, 3), nn.ReLU())\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # on this driver only
    import driver_only_nets

    with pytest.raises(EngineError, match=r"cannot be sent to the Ray workers \(ModuleNotFoundError.*run directory"):
        convlens.channel_stats(driver_only_nets.Net(), data, "1", engine=engine)

    locked = nn.Sequential(nn.Conv2d(1, 2, 3))
    locked.lock = threading.Lock()  # type: ignore[assignment]
    with pytest.raises(EngineError, match=r"^the model \(Sequential\) cannot be sent.*module:factory"):
        convlens.channel_stats(locked, data, "0", engine=engine)


def test_refusals(engine: RayEngine, model: nn.Module, data: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown engine 'rays'.*did you mean 'ray'"):
        convlens.channel_stats(model, data, "conv1", engine="rays")
    with pytest.raises(ConfigError, match="dump_to run in-process only"):
        convlens.channel_stats(model, data, "conv1", engine=engine, dump_to=tmp_path / "dump")
    batches = [(torch.zeros(2, 1, 28, 28), torch.zeros(2))]
    with pytest.raises(EngineError, match="a list cannot be split"):
        convlens.topk_examples(model, batches, "conv1", engine=engine)
    assert not (tmp_path / "dump").exists()


def test_cli_engine_ray_prints_what_the_in_process_command_prints(ray_cluster: Any, engine: RayEngine,
                                                                  tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    engine.close()  # its actors hold both CPUs of the test cluster; the command starts its own
    deadline = time.monotonic() + 60  # killing is asynchronous: wait for the CPUs, or Ray's
    while ray_cluster.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:  # scheduler
        time.sleep(0.1)  # prints "cannot be scheduled right now" warnings into the output compared
    run = untrained_run(tmp_path / "run", mnist_path())
    args = ["stats", str(run), "--layer", "conv1", "--split", "test", "--data-dir", str(mnist_path())]
    with one_thread():
        code, want, err = cli_call(capsys, *args, "--out", str(tmp_path / "a"))
    assert code == 0, err
    code, got, err = cli_call(capsys, *args, "--out", str(tmp_path / "b"), "--engine", "ray")
    assert code == 0, err
    assert got.replace(str(tmp_path / "b"), "OUT") == want.replace(str(tmp_path / "a"), "OUT")
    code, _, err = cli_call(capsys, *args, "--out", str(tmp_path / "c"), "--address", "10.0.0.1:6379")
    assert code != 0 and "--address goes with --engine ray" in err


def test_a_streamed_folder_on_ray_equals_in_process(engine: RayEngine, tmp_path: Path) -> None:
    # a folder read lazily (a StreamingDataset, shipped to the actors as its index) gives
    # the numbers of the same folder in memory, in this process
    from _data_beds import colour_images, write_folder
    from convlens.data.stream import StreamingDataset

    images, labels = colour_images(12, size=32, seed=4)
    write_folder(tmp_path / "bed", images, labels, ["red", "green", "blue"])
    streamed = convlens.load_dataset(f"folder:{tmp_path / 'bed'}?budget=1000", "train")
    in_memory = convlens.load_dataset(f"folder:{tmp_path / 'bed'}", "train", budget="1GB")
    assert isinstance(streamed, StreamingDataset) and not isinstance(in_memory, StreamingDataset)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))
    with one_thread():
        want = convlens.channel_stats(model, in_memory, ["0", "2"], batch_size=8, progress=False)
        want_top = convlens.topk_examples(model, in_memory, "2", k=4, batch_size=8, progress=False)
    engine.partitions, engine.shuffle = 3, 7
    assert_same_stats(want, convlens.channel_stats(model, streamed, ["0", "2"], batch_size=8, engine=engine))
    assert_same_topk(want_top, convlens.topk_examples(model, streamed, "2", k=4, batch_size=8, engine=engine))
