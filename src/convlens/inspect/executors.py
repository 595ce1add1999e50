"""Where a dataset pass runs: in this process (the default), or on a Ray cluster.

Every dataset-level computation (:func:`convlens.channel_stats`,
:func:`convlens.topk_examples`, :func:`convlens.faithfulness`) is a :class:`DatasetPass`:
it computes a *partial* result over a range of its items, partials merge (their
accumulators are in :mod:`convlens.inspect.accumulate`), and the merged partial becomes the
report. An executor decides where the partials are computed:

* ``"inprocess"``: one partial over all the data, here (the results convlens always gave);
* ``"ray"`` (or a :class:`RayEngine`): the items are cut into partitions of whole batches,
  Ray actors compute them, the driver merges each partition's partial once, in whatever
  order they finish. Because a partition holds whole batches of the in-process pass, every
  batch is the same one, so integer results and top-k lists are identical and float
  statistics agree to rounding (the merges run in float64).

Each actor builds the model once: from its run directory, or from ``module:factory`` (and
weights), when the model came from one (a :class:`convlens.models.run.Run` or a
:class:`convlens.models.handle.ModelHandle`); a model object is pickled once into Ray's
object store. The data goes into the object store once too; a task names its partition by
``(start, stop)`` and the actor takes ``data.subset(range(start, stop))``. An actor that dies
is restarted (building its model again) and its partition retried; the driver keys results
by partition id, so a partition is merged once however often it ran.

>>> import torch
>>> from torch import nn
>>> import convlens
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
>>> report = convlens.channel_stats(model, torch.randn(64, 1, 8, 8), "1", engine="ray")  # doctest: +SKIP
>>> with RayEngine(address="auto") as ray_engine:        # actors kept warm between passes  # doctest: +SKIP
...     stats = convlens.channel_stats(run, test_set, "conv2", engine=ray_engine)
...     top = convlens.topk_examples(run, test_set, "conv2", engine=ray_engine)
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

from torch import Tensor, nn

from convlens.errors import ConfigError, ConvlensError, positive_int, unknown_name

__all__ = [
    "ENGINES",
    "DatasetPass",
    "EngineError",
    "HasModel",
    "ModelSource",
    "RayEngine",
    "model_source",
    "partitions",
    "run_pass",
    "slice_data",
    "unwrap",
]

#: The engines a pass runs on, by name.
ENGINES = ("inprocess", "ray")

P = TypeVar("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class EngineError(ConvlensError, RuntimeError):
    """A pass could not run on the chosen engine (Ray missing or unreachable, a model the
    workers cannot rebuild, data that cannot be split, workers that kept dying)."""


class HasModel(Protocol):
    """A run or a model handle: anything with the ``nn.Module`` to use as ``.model``."""

    @property
    def model(self) -> nn.Module: ...


class DatasetPass(Protocol[P, R_co]):
    """A dataset-level computation in mergeable pieces.

    ``partial(model, data, span, progress)`` computes over items ``span = (start, stop)``
    of ``data`` (``None``: all of it, in-process); it must depend on nothing but its
    arguments, so a retried partition gives the same partial. ``merge`` is associative
    and, up to float rounding, commutative. ``finish`` turns the merged partial into the
    report, on the driver, with the driver's model."""

    description: str
    batch_size: int

    def items(self, data: Any) -> int:
        """How many items the partitions divide (the inputs, or a sample of them)."""

    def partial(self, model: nn.Module, data: Any, span: tuple[int, int] | None, progress: bool | None) -> P: ...

    def merge(self, a: P, b: P) -> P: ...

    def finish(self, merged: P, model: nn.Module) -> R_co: ...


def unwrap(model: object) -> nn.Module:
    """The ``nn.Module`` of a model, a run or a model handle."""
    module = getattr(model, "model", model)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"expected a model, a run or a model handle, got {type(model).__name__}")
    return module


def partitions(n: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """``parts`` (or fewer) contiguous ``(start, stop)`` ranges covering ``range(n)``, each
    of whole blocks of ``align`` items (the last block may be short), as even as that
    allows.

    >>> partitions(10, 3, align=2)
    [(0, 2), (2, 6), (6, 10)]
    """
    parts, align = positive_int("partitions", parts), positive_int("batch_size", align)
    blocks = -(-n // align)
    parts = max(1, min(parts, blocks))
    cuts = [min(n, (blocks * i // parts) * align) for i in range(parts + 1)]
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def slice_data(data: Any, start: int, stop: int) -> Any:
    """Items ``start .. stop - 1`` of a dataset (``data.subset``) or a tensor."""
    if isinstance(data, Tensor):
        return data[start:stop]
    subset = getattr(data, "subset", None)
    if callable(subset):
        return subset(range(start, stop))
    raise EngineError(
        f"the Ray engine splits the data by index, and a {type(data).__name__} cannot be split: pass a dataset "
        "(convlens.load_dataset) or a tensor of inputs, or use engine='inprocess'"
    )


def data_length(data: Any) -> int:
    """``len(data)`` of a dataset or tensor, as the Ray engine needs it."""
    if isinstance(data, Tensor):
        return int(data.shape[0])
    if callable(getattr(data, "subset", None)) and hasattr(data, "__len__"):
        return len(data)
    slice_data(data, 0, 0)  # raises the message above
    raise AssertionError("unreachable")  # pragma: no cover


# --- the model, as a worker builds it --------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """How a worker gets the model: ``kind`` ``"run"`` (``path``), ``"factory"`` (``spec``,
    ``weights``) or ``"object"`` (``blob``: the pickled module, in the object store)."""

    kind: str
    path: str | None = None
    spec: str | None = None
    weights: str | None = None
    blob: Any = None  # an ObjectRef of the pickled model
    cwd: str | None = None  # the driver's directory, where a module:factory may live
    device: str = "cpu"
    key: str = ""  # equal keys build equal models (the RayEngine keeps actors for one key)

    def build(self) -> nn.Module:
        """The model, on the worker. Raises EngineError (one line) when it cannot be rebuilt."""
        if self.kind == "run":
            from convlens.models.run import load_run

            assert self.path is not None  # for mypy: set with kind "run"
            return load_run(self.path, device=self.device).model
        if self.kind == "factory":
            from convlens.models.external import load_model

            assert self.spec is not None  # for mypy: set with kind "factory"
            if self.cwd and self.cwd not in sys.path:
                sys.path.append(self.cwd)
            return load_model(self.spec, self.weights, map_location=self.device)
        import pickle

        import ray

        blob = ray.get(self.blob)
        try:
            model = pickle.loads(blob)
        except Exception as exc:
            raise EngineError(_unshippable(self.spec or "the model", exc)) from None
        return model.to(self.device) if isinstance(model, nn.Module) else model


def _unshippable(what: str, exc: BaseException) -> str:
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
    return (f"{what} cannot be sent to the Ray workers ({reason}); pass a run directory (convlens.load_run) or a "
            "model from --model module:factory (convlens.models.handle.open_model) that the workers can import")


def _file_key(path: str | os.PathLike[str] | None) -> str:
    if path is None:
        return ""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return str(p)
    return f"{p}:{st.st_size}:{st.st_mtime_ns}"


def _device_of(model: nn.Module) -> str:
    for t in model.parameters():
        return t.device.type
    return "cpu"


def model_source(model: Any) -> ModelSource:
    """The :class:`ModelSource` of a run, a model handle or an ``nn.Module``.

    A run (or a handle of one) is rebuilt from its directory, a handle of ``--model
    module:factory`` from that factory and its weights; any other model is pickled
    (into the object store once, when the actors start)."""
    from convlens.models.handle import ModelHandle
    from convlens.models.run import WEIGHTS, Run

    module = unwrap(model)
    device = _device_of(module)
    run_path = model.path if isinstance(model, (Run, ModelHandle)) else None
    if run_path is not None and (isinstance(model, Run) or model.run is not None):
        path = str(Path(run_path).resolve())
        return ModelSource("run", path=path, device=device, key="run:" + _file_key(Path(path) / WEIGHTS))
    spec = getattr(model, "spec", None) if isinstance(model, ModelHandle) else None
    if spec is not None:
        weights = getattr(model, "weights", None)
        w = None if weights is None else str(Path(weights).resolve())
        return ModelSource("factory", spec=spec, weights=w, cwd=os.getcwd(), device=device,
                           key=f"factory:{spec}:{_file_key(w)}")
    from ray import cloudpickle

    try:
        blob = cloudpickle.dumps(module)
    except Exception as exc:
        raise EngineError(_unshippable(f"the model ({type(module).__name__})", exc)) from None
    key = "object:" + hashlib.sha256(blob).hexdigest()
    return ModelSource("object", blob=blob, spec=f"the model ({type(module).__name__})", device=device, key=key)


# --- executors ---------------------------------------------------------------------------------


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise EngineError("engine='ray' needs Ray: pip install 'convlens[ray]' (ray[data])") from None
    return ray


class _Worker:
    """A Ray actor: builds a model once (again only for another model, or after a
    restart), then computes partitions of passes with it."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.model: nn.Module | None = None

    def run(self, source: ModelSource, pass_: DatasetPass[Any, Any], data: Any, pid: int, start: int,
            stop: int) -> tuple[int, Any]:
        if self.model is None or self.key != source.key:
            self.model, self.key = None, None
            self.model, self.key = source.build(), source.key
        return pid, pass_.partial(self.model, data, (start, stop), False)


class RayEngine:
    """Runs dataset passes on a Ray cluster: ``address`` as ``ray.init`` takes it (None:
    the cluster ``RAY_ADDRESS`` names or a new local one; ``"auto"``: the one on this
    machine); a connection made before (``ray.init`` by the caller) is used as it is.

    ``actors`` workers (default: one per CPU of the cluster, at most one per partition)
    each build the model once and are kept, with it, for the next pass until :meth:`close`
    (or the end of a ``with`` block). ``partitions`` (default: four per
    actor) are runs of whole batches; with ``shuffle`` (a seed) they are handed out in a
    shuffled order. A worker that dies is restarted and its partition retried, up to
    ``max_retries`` times.
    """

    def __init__(self, address: str | None = None, *, actors: int | None = None, partitions: int | None = None,
                 shuffle: int | None = None, max_retries: int = 3, num_cpus: float = 1.0) -> None:
        self.address = address
        self.actors = None if actors is None else positive_int("actors", actors)
        self.partitions = None if partitions is None else positive_int("partitions", partitions)
        self.shuffle = shuffle
        self.max_retries = int(max_retries)
        self.num_cpus = float(num_cpus)
        self._pool: tuple[str, list[Any]] | None = None
        self.last_run: dict[str, Any] = {}  # what the latest pass did (partitions, actors, merges)

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the actors this engine started (the cluster stays up)."""
        if self._pool is not None:
            ray = _import_ray()
            for actor in self._pool[1]:
                ray.kill(actor, no_restart=True)
            self._pool = None

    def _connect(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            import logging

            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"at {self.address}" if self.address else "(none running; a local one could not start)"
                raise EngineError(f"cannot connect to the Ray cluster {where}: {str(exc).splitlines()[0][:160]}; "
                                  "start one with `ray start --head` or check --address") from None
        return ray

    def _actors(self, ray: Any, wanted: int, gpus: int) -> list[Any]:
        if self._pool is not None and self._pool[0] != str(gpus):
            self.close()
        actors = self._pool[1] if self._pool is not None else []
        if len(actors) < wanted:
            free = float(ray.available_resources().get("CPU", 0.0))
            if free < self.num_cpus * (wanted - len(actors)):
                import warnings

                from convlens.errors import ConvlensNote

                warnings.warn(ConvlensNote(
                    f"the Ray cluster has {free:g} free CPUs for {wanted - len(actors)} new workers of "
                    f"{self.num_cpus:g} CPU each (other actors hold the rest); the pass waits until they are free"),
                    stacklevel=3)
            cls = ray.remote(_Worker).options(num_cpus=self.num_cpus, num_gpus=gpus, max_restarts=self.max_retries,
                                              max_task_retries=self.max_retries)
            actors = actors + [cls.remote() for _ in range(wanted - len(actors))]
            self._pool = (str(gpus), actors)
        return actors[:wanted]

    def run(self, pass_: DatasetPass[P, R], model: Any, data: Any) -> R:
        """Run ``pass_`` over ``data`` on the cluster and return its report."""
        ray = self._connect()
        module = unwrap(model)
        n = pass_.items(data)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1) // self.num_cpus))
        actors_wanted = self.actors or cpus
        spans = partitions(n, self.partitions or 4 * actors_wanted, pass_.batch_size)
        source = model_source(model)
        if source.kind == "object":  # into the object store once, whatever the number of tasks
            source = dataclasses.replace(source, blob=ray.put(source.blob))
        actors = self._actors(ray, min(actors_wanted, len(spans)), 1 if source.device == "cuda" else 0)
        order = list(range(len(spans)))
        if self.shuffle is not None:
            random.Random(self.shuffle).shuffle(order)
        data_ref, pass_ref, source_ref = ray.put(data), ray.put(pass_), ray.put(source)
        merged: Any = None
        done: set[int] = set()
        pending: dict[Any, tuple[int, Any]] = {}
        queue = iter(order)

        def submit(actor: Any) -> None:
            pid = next(queue, None)
            if pid is not None:
                start, stop = spans[pid]
                pending[actor.run.remote(source_ref, pass_ref, data_ref, pid, start, stop)] = (pid, actor)

        for actor in actors:
            submit(actor)
        merges = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            pid, actor = pending.pop(ref)
            pid_back, part = _result(ray, ref, pid, len(spans))
            if pid_back not in done:  # a partition counts once, however often it ran
                done.add(pid_back)
                merged = part if merged is None else pass_.merge(merged, part)
                merges += 1
            submit(actor)
        self.last_run = {"items": n, "partitions": spans, "order": order, "actors": len(actors), "merged": merges}
        return pass_.finish(merged, module)


def _result(ray: Any, ref: Any, pid: int, total: int) -> tuple[int, Any]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, ConvlensError):
            raise exc.cause from None
        raise
    except ray.exceptions.RayActorError as exc:
        if "No module named 'convlens" in str(exc):
            raise EngineError("the Ray cluster's workers cannot import convlens: install it on every node "
                              "(pip install 'convlens[ray]', the same version as here) and start the pass again"
                              ) from None
        raise EngineError(f"a Ray worker died on partition {pid} of {total} more times than it may be retried "
                          f"({str(exc).splitlines()[0][:120]}); see the cluster's logs, or give it more memory") from None


class _InProcess:
    def run(self, pass_: DatasetPass[P, R], model: Any, data: Any, progress: bool | None) -> R:
        module = unwrap(model)
        return pass_.finish(pass_.partial(module, data, None, progress), module)


def run_pass(pass_: DatasetPass[P, R], model: Any, data: Any, *, engine: str | RayEngine = "inprocess",
             address: str | None = None, progress: bool | None = None) -> R:
    """Run ``pass_`` over ``data`` with ``model`` (an ``nn.Module``, a run or a model
    handle) on ``engine``: ``"inprocess"``, ``"ray"`` (a :class:`RayEngine` on ``address``
    for this pass only) or a :class:`RayEngine` of one's own."""
    if isinstance(engine, RayEngine):
        return engine.run(pass_, model, data)
    if engine == "inprocess" or engine is None:
        if address is not None:
            raise ConfigError("address= goes with engine='ray'; the in-process engine runs here")
        return _InProcess().run(pass_, model, data, progress)
    if engine == "ray":
        with RayEngine(address) as ray_engine:
            return ray_engine.run(pass_, model, data)
    raise ConfigError(unknown_name("engine", str(engine), ENGINES))


def check_engine(engine: object, uses: Sequence[str] = ()) -> None:
    """A one-line ConfigError for an unknown engine name, or options the Ray engine
    cannot honour (``uses``: those given)."""
    if isinstance(engine, RayEngine):
        name = "ray"
    elif engine in ENGINES:
        name = str(engine)
    else:
        raise ConfigError(unknown_name("engine", str(engine), ENGINES))
    if name == "ray" and uses:
        raise ConfigError(f"{', '.join(uses)} run in-process only; leave out engine='ray' for them")
