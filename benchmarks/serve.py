"""The web app under load: concurrent CAM requests against the library call they make.

One run of seed-cnn (seeded, untrained weights: the cost does not depend on them) is
written to a temporary directory and served by the real command, ``convlens serve RUN
--port P`` (127.0.0.1 only), in a subprocess. Then, in this process:

* ``library``  the call one request makes: ``convlens.views.explanation(run, chosen,
               method="gradcam").normalised`` on a chosen test digit, timed sequentially
               (median), and the same call from 8 threads at once (per-call median and
               p95), in this process, on the same machine, in the same run;
* ``server``   8 client threads × 200 requests of ``GET /api/cam?input=index:I&method=
               gradcam&format=json&scores=false&words=false`` (the heatmap's numbers as
               JSON), after 40 warm-up requests: errors, p50 and p95 latency, requests/s;
* ``floor``    the same clients × requests of a small static file (no model): what the HTTP
               stack alone costs under that load, beside the target;
* ``memory``   the server's resident memory (``/proc/PID/status`` VmRSS) sampled every
               0.1 s: after warm-up, then the mean of the first and of the last fifth of
               the run.

Target (issue #16): 0 errors, p95 ≤ 3× the library call's time, memory flat.

Both sides use ``--threads`` torch threads (default 1; the server through OMP_NUM_THREADS).

Run:  CONVLENS_DATA_DIR=../shared/data/mnist-9k python benchmarks/serve.py [--clients 8] [--requests 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import allocator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def make_run(folder: Path, data_dir: str) -> Path:
    from convlens.data import load_dataset
    from convlens.models import build_model, get_config
    from convlens.models.run import DataSpec, RunConfig, save_run

    torch.manual_seed(0)
    ds = load_dataset("mnist", "test", data_dir=data_dir)
    spec = DataSpec(name="mnist", source=str(data_dir), classes=ds.classes, mean=ds.mean, std=ds.std)
    cfg = RunConfig(model=get_config("seed-cnn"), data=spec, seed=0, train={})
    return save_run(folder / "run", cfg, build_model("seed-cnn").state_dict(), {"test_accuracy": 0.1})


def library_times(run_dir: Path, data_dir: str, n: int, clients: int) -> tuple[float, float, float]:
    from convlens import views
    from convlens.models.handle import open_model

    h = open_model(run_dir)
    ds = views.dataset_for(h, "test", data_dir=data_dir)
    chosen = [views.choose_input(h, index=i, data=ds) for i in range(64)]

    def call(i: int) -> float:
        t = time.perf_counter()
        views.explanation(h, chosen[i % 64], method="gradcam").normalised  # noqa: B018
        return time.perf_counter() - t

    for i in range(20):
        call(i)
    sequential = statistics.median(call(i) for i in range(n))
    with ThreadPoolExecutor(clients) as pool:
        together = list(pool.map(call, range(clients * 50)))
    return sequential, statistics.median(together), _pct(together, 0.95)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200, help="per client")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads, here and in the server (OMP_NUM_THREADS) [default: 1: concurrent "
                         "requests are the parallelism; on a loaded machine 2 threads per call spin against each other]")
    args = ap.parse_args()
    import warnings

    from convlens.errors import ConvlensNote

    warnings.simplefilter("ignore", ConvlensNote)  # the benchmark's run records no data fingerprint
    torch.set_num_threads(args.threads)
    data_dir = os.environ.get("CONVLENS_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared/data/mnist-9k"))
    print(f"{allocator()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s) here and in the server, "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_run(Path(tmp), data_dir)
        port = _free_port()
        env = {**os.environ, "CONVLENS_DATA_DIR": data_dir, "OMP_NUM_THREADS": str(args.threads)}
        server = subprocess.Popen([sys.executable, "-m", "convlens", "serve", str(run_dir), "--port", str(port)],
                                  env=env, stderr=subprocess.PIPE, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(base + "/api/info", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            url = base + "/api/cam"

            def params(i: int) -> dict[str, str]:
                return {"input": f"index:{i % 64}", "method": "gradcam", "format": "json", "scores": "false",
                        "words": "false"}

            with httpx.Client(timeout=30) as c:
                for i in range(40):
                    c.get(url, params=params(i)).raise_for_status()
            rss: list[float] = []
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    rss.append(_rss_mib(server.pid))
                    time.sleep(0.1)

            after_warmup = _rss_mib(server.pid)
            sampler = threading.Thread(target=sample, daemon=True)
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()

            def client(k: int) -> None:
                with httpx.Client(timeout=30) as c:
                    for i in range(args.requests):
                        t = time.perf_counter()
                        try:
                            r = c.get(url, params=params(k * args.requests + i))
                            ok = r.status_code == 200 and len(r.json()["heat"]) == 28
                            why = f"HTTP {r.status_code}"
                        except (httpx.HTTPError, ValueError, KeyError) as exc:
                            ok, why = False, type(exc).__name__
                        dt = time.perf_counter() - t
                        with lock:
                            latencies.append(dt)
                            if not ok:
                                errors.append(why)

            sampler.start()
            t0 = time.perf_counter()
            threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(600)
            wall = time.perf_counter() - t0
            done.set()
            sampler.join()
            # the floor: the same load on a request that runs no model (a small static file), so
            # what the HTTP stack itself costs under 8 clients on this machine is seen beside it
            floor: list[float] = []

            def static_client(k: int) -> None:
                with httpx.Client(timeout=30) as c:
                    for _ in range(args.requests):
                        t = time.perf_counter()
                        c.get(base + "/static/app.css").raise_for_status()
                        dt = time.perf_counter() - t
                        with lock:
                            floor.append(dt)

            threads = [threading.Thread(target=static_client, args=(k,)) for k in range(args.clients)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(600)
        finally:
            server.terminate()
            server.wait(30)
        seq, conc50, conc95 = library_times(run_dir, data_dir, 200, args.clients)

    n = len(latencies)
    p50, p95 = _pct(latencies, 0.5), _pct(latencies, 0.95)
    fifth = max(1, len(rss) // 5)
    first, last = statistics.mean(rss[:fifth]), statistics.mean(rss[-fifth:])
    print(f"library call (views.explanation, Grad-CAM, 1×1×28×28): {1e3 * seq:.2f} ms sequential; "
          f"from {args.clients} threads at once: median {1e3 * conc50:.2f} ms, p95 {1e3 * conc95:.2f} ms")
    print(f"server: {args.clients} clients × {args.requests} requests = {n} in {wall:.1f} s ({n / wall:.0f}/s), "
          f"{len(errors)} errors{' (' + ', '.join(sorted(set(errors))) + ')' if errors else ''}")
    print(f"latency: p50 {1e3 * p50:.2f} ms, p95 {1e3 * p95:.2f} ms; p95 / sequential library call = {p95 / seq:.1f}×, "
          f"p95 / concurrent library p95 = {p95 / conc95:.1f}×")
    f95 = _pct(floor, 0.95)
    print(f"floor (the same load on a static file, no model): p50 {1e3 * _pct(floor, 0.5):.2f} ms, "
          f"p95 {1e3 * f95:.2f} ms = {f95 / seq:.1f}× the sequential library call")
    print(f"server memory (VmRSS): {after_warmup:.0f} MiB after warm-up, first fifth {first:.0f} MiB, "
          f"last fifth {last:.0f} MiB ({100 * (last - first) / first:+.1f}%), max {max(rss):.0f} MiB")


if __name__ == "__main__":
    main()
