"""Serving latency and throughput: the model server against `mlflow models serve` and bare predict_proba.

All paths serve the same registered model version, in the same run, on this machine:
- the model server as the stack runs it (`uvicorn serving.app:app`, one worker):
  POST /predict with a flight's request fields, so every request includes the Feast
  online lookup, building the model frame, predict_proba and the inference log;
- `mlflow models serve --env-manager local` (one worker, OMP_NUM_THREADS=1 so its
  trees do not pay for an OpenMP pool on one row): POST /invocations with the
  flight's feature row, already looked up (it does less work per request);
- in-process, no HTTP: the server's request path (lookup + frame + predict_proba)
  and its parts, next to Feast's public `get_online_features` and a bare
  predict_proba on a one-row DataFrame.
Single-request latency is measured sequentially over one keep-alive connection;
throughput with `--concurrency` clients for `--seconds`. Everything runs in a
temporary MLOPS_HOME (features for Jan-Mar 2013, a fresh MLflow server) that is
removed afterwards. Results: bench/results/serving.json and a markdown table.

    python -m bench.serving_bench [--requests 2000] [--seconds 10] [--concurrency 8] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, measure_in_temp_home
MONTHS = ("2013-01", "2013-02", "2013-03")
MODEL_NAME = "flight_delay"
FLIGHTS = 500


# -- environment ------------------------------------------------------------------------
from tests.support import free_port  # noqa: E402  (also used by bench.chain_bench)


def use_home(home: Path, mlflow_url: str) -> dict:
    """Point this process (and the children started with the returned env) at `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    env.update(MLOPS_HOME=str(home), MLFLOW_TRACKING_URI=mlflow_url, MLOPS_MODEL_NAME=MODEL_NAME,
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])))
    os.environ.clear()
    os.environ.update(env)
    from tests.support import reload_settings

    reload_settings()
    return env


def build_features(home: Path) -> None:
    import storage
    from features import ingest, samples, tasks

    local = REPO / ".local" / "samples"
    if local.exists():
        shutil.copytree(local, home / "samples", dirs_exist_ok=True)
    for month in MONTHS:
        batch = ingest.Batch(f"bench-{month}", storage.get()).ingest(samples.drop(month))
        tasks.materialize_written(tasks.write_features(batch))


def start(argv: list[str], env: dict, log: Path, ready_url: str, timeout: float = 180.0,
          ready=lambda resp: resp.status_code == 200) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(argv, env=env, cwd=log.parent, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[:3]} exited; see {log}")
        try:
            if ready(httpx.get(ready_url, timeout=2)):
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop(proc)
    raise TimeoutError(f"{argv[:3]} not ready after {timeout}s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- workload --------------------------------------------------------------------------
def register_model(mlflow_url: str) -> tuple[str, object]:
    import model_registry
    from tests import sample_model

    data = sample_model.split()
    estimator = sample_model.fit(data, max_iter=100)
    version = sample_model.register(estimator, data, MODEL_NAME, mlflow_url, alias=model_registry.PRODUCTION,
                                    pyfunc_predict_fn="predict_proba")
    return version, data


def workload(version: str) -> tuple[list[dict], list[list], tuple]:
    """Request bodies for /predict, the same flights' feature rows for /invocations, and their frames."""
    from serving.client import flight_table_body
    from serving.tasks import smoke_flights
    from serving.frame import model_input
    from serving.online import OnlineFeatures
    from serving.schemas import FlightRequest

    flights = smoke_flights(version, count=FLIGHTS)
    payloads = [flight_table_body(row) for _, row in flights.iterrows()]
    requests = [FlightRequest.model_validate(p) for p in payloads]
    online = OnlineFeatures()
    online.refresh()
    frame = model_input(requests, online.lookup([r.entity_row() for r in requests])[0])
    rows = [[None if v != v else v for v in row] for row in frame.to_numpy().tolist()]  # NaN -> null
    return payloads, rows, (online, requests, frame)


# -- measurements -----------------------------------------------------------------------
def percentiles(ms: list[float]) -> dict:
    import numpy as np

    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(np.mean(ms))}


def sequential(url: str, bodies: list, requests: int, warmup: int = 100) -> dict:
    import httpx

    timings = []
    with httpx.Client(timeout=10) as http:
        for i in range(warmup + requests):
            t0 = time.perf_counter()
            resp = http.post(url, json=bodies[i % len(bodies)])
            elapsed = (time.perf_counter() - t0) * 1000
            resp.raise_for_status()
            if i >= warmup:
                timings.append(elapsed)
    return percentiles(timings)


def throughput(url: str, bodies: list, seconds: float, concurrency: int) -> dict:
    import httpx

    async def client(http, deadline, counts, offset):
        i = offset
        while time.monotonic() < deadline:
            resp = await http.post(url, json=bodies[i % len(bodies)])
            counts["ok" if resp.status_code == 200 else "errors"] += 1
            i += concurrency

    async def run():
        counts = {"ok": 0, "errors": 0}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            t0 = time.monotonic()
            await asyncio.gather(*(client(http, t0 + seconds, counts, k) for k in range(concurrency)))
            return counts, time.monotonic() - t0

    counts, elapsed = asyncio.run(run())
    return {"requests_per_s": counts["ok"] / elapsed, "ok": counts["ok"], "errors": counts["errors"],
            "seconds": elapsed, "concurrency": concurrency}


def in_process(fn, repeats: int) -> dict:
    for _ in range(50):
        fn(0)
    timings = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        timings.append((time.perf_counter() - t0) * 1000)
    return percentiles(timings)


def in_process_paths(model, online, requests: list, frame, repeats: int) -> dict:
    """The server's request path without HTTP, its parts, and Feast's public lookup for comparison."""
    from features.names import FEATURE_SERVICE
    from serving.frame import model_input

    store = online.store
    service = store.get_feature_service(FEATURE_SERVICE)
    rows = [r.entity_row() for r in requests]
    singles = [frame.iloc[[i]] for i in range(len(frame))]

    def request_path(i):
        request = requests[i % len(requests)]
        return model.probabilities(model_input([request], online.lookup([request.entity_row()])[0]))

    return {
        "in_process_request_path": in_process(request_path, repeats),
        "feast_online_read": in_process(lambda i: online.lookup([rows[i % len(rows)]]), repeats),
        "feast_get_online_features": in_process(lambda i: store.get_online_features(
            features=service, entity_rows=[{k: v or "" for k, v in rows[i % len(rows)].items()}]).to_dict(),
            repeats),
        "served_predict_proba": in_process(lambda i: model.probabilities(singles[i % len(singles)]), repeats),
        "bare_predict_proba": in_process(lambda i: model.estimator.predict_proba(singles[i % len(singles)]),
                                         repeats),
    }


def agree(server_url: str, mlflow_url: str, payloads: list[dict], rows: list[list], columns: list[str]) -> float:
    """Largest gap between the two servers' probabilities on the same flights (same model, same features)."""
    import httpx

    ours = [httpx.post(server_url, json=p).json()["probability"] for p in payloads[:20]]
    theirs = httpx.post(mlflow_url, json={"dataframe_split": {"columns": columns, "data": rows[:20]}}).json()
    return max(abs(a - b[1]) for a, b in zip(ours, theirs["predictions"]))


# -- run ---------------------------------------------------------------------------------
def measure(args, home: Path) -> dict:
    from features.compute import MODEL_FEATURES
    from serving.model import limit_thread_pools, load_version

    mlflow_port, server_port, baseline_port = free_port(), free_port(), free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    env = use_home(home, mlflow_url)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    build_features(home)
    print(f"features for {', '.join(MONTHS)} built in {time.monotonic() - t0:.0f}s", flush=True)
    procs = []
    try:
        bin_dir = Path(sys.executable).parent
        procs.append(start([str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                            "--workers", "1", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                            "--artifacts-destination", str(home / "artifacts")],
                           env, home / "logs" / "mlflow.log", f"{mlflow_url}/health"))
        version, _ = register_model(mlflow_url)
        payloads, rows, (online, requests, frame) = workload(version)
        model = load_version(mlflow_url, MODEL_NAME, version)  # as the server loads it
        estimator = model.estimator
        procs.append(start([sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1",
                            "--port", str(server_port), "--no-access-log"],
                           env, home / "logs" / "model-server.log", f"http://127.0.0.1:{server_port}/health",
                           ready=lambda r: r.status_code == 200 and r.json()["ready"]))
        procs.append(start([str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}/{version}",
                            "--env-manager", "local", "--host", "127.0.0.1", "-p", str(baseline_port)],
                           {**env, "OMP_NUM_THREADS": "1",  # it runs `uvicorn` from PATH
                            "PATH": os.pathsep.join([str(bin_dir), env.get("PATH", "")])},
                           home / "logs" / "mlflow-serve.log",
                           f"http://127.0.0.1:{baseline_port}/ping"))
        ours = f"http://127.0.0.1:{server_port}/predict"
        theirs = f"http://127.0.0.1:{baseline_port}/invocations"
        bodies = [{"dataframe_split": {"columns": MODEL_FEATURES, "data": [row]}} for row in rows]
        gap = agree(ours, theirs, payloads, rows, MODEL_FEATURES)
        load_start = os.getloadavg()
        print("measuring single requests ...", flush=True)
        single = {"model_server": sequential(ours, payloads, args.requests),
                  "mlflow_models_serve": sequential(theirs, bodies, args.requests)}
        limit_thread_pools()  # as the server does in each predicting thread
        single.update(in_process_paths(model, online, requests, frame, args.requests))
        print("measuring throughput ...", flush=True)
        rate = {"model_server": throughput(ours, payloads, args.seconds, args.concurrency),
                "mlflow_models_serve": throughput(theirs, bodies, args.seconds, args.concurrency)}
        return {
            "machine": {"cpus": os.cpu_count(), "loadavg_at_start": load_start, "loadavg_at_end": os.getloadavg()},
            "model": {"name": MODEL_NAME, "version": version, "estimator": type(estimator).__name__,
                      "max_iter": int(getattr(estimator, "max_iter", 0)), "features": len(MODEL_FEATURES)},
            "answers_max_gap": gap, "single_request": single, "throughput": rate,
            "requests": args.requests, "flights": len(payloads),
        }
    finally:
        for proc in reversed(procs):
            stop(proc)


LABELS = {
    "model_server": "model server POST /predict (Feast lookup + frame + predict + log)",
    "mlflow_models_serve": "`mlflow models serve` POST /invocations (feature row given)",
    "in_process_request_path": "in-process: the server's lookup + frame + predict, no HTTP",
    "feast_online_read": "in-process: online lookup as served (`Provider.online_read`, 4 views)",
    "feast_get_online_features": "in-process: Feast `get_online_features`, one entity row",
    "served_predict_proba": "in-process: predict_proba as served (array input, 1 thread)",
    "bare_predict_proba": "in-process: bare predict_proba on a one-row DataFrame",
}


def table(result: dict) -> str:
    conc = result["throughput"]["model_server"]["concurrency"]
    lines = [f"| path | p50 ms | p99 ms | throughput req/s ({conc} clients) |", "|---|---|---|---|"]
    for key, label in LABELS.items():
        s = result["single_request"][key]
        rps = result["throughput"].get(key, {}).get("requests_per_s")
        lines.append(f"| {label} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {f'{rps:,.0f}' if rps else '-'} |")
    m = result["machine"]
    lines.append(f"\n{result['model']['estimator']} ({result['model']['max_iter']} iterations), "
                 f"{result['requests']} sequential requests per path, {m['cpus']} CPUs, load average "
                 f"{m['loadavg_at_start'][0]:.1f} -> {m['loadavg_at_end'][0]:.1f}; "
                 f"largest gap between the two servers' probabilities: {result['answers_max_gap']:.1e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per path")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput run")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients in the throughput runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary MLOPS_HOME (logs)")
    args = parser.parse_args(argv)
    result = measure_in_temp_home(measure, args, "bench-serving-", "serving.json")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
