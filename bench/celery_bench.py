"""Throughput on the celery profile when work grows: one Celery worker against two.

For each worker count (1, then 2; each worker has MLOPS_CELERY_WORKER_CONCURRENCY slots) a
fresh celery stack is started in a temporary MLOPS_HOME on free ports, with its own
databases and Redis keys (dropped afterwards), and two workloads run through it:

- months: twelve months of flights and weather dropped into landing at once -> the
  `deployed_model` event (wall time from the drop);
- candidates: bench/dags/bench_candidates.py, four candidates (two training sets x the two
  families) mapped on the `training` queue -> wall time from the first candidate's start to
  the last one's end, and the DAG run's whole time.

Scaling efficiency = T(1 worker) / (2 x T(2 workers)): 1.0 when two workers halve the time.
Peak memory of each worker: its session (Celery's main process, pool, supervisors and task
processes, which Airflow puts in process groups of their own) sampled every second, as the sum of RSS and the sum of PSS (shared pages
counted once across the group's processes).

    python -m bench.celery_bench [--workers 1 2] [--skip months|candidates]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime
from pathlib import Path

from bench.common import stack_addresses
from bench.serving_bench import free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
MONTHS = [f"2013-{m:02d}" for m in range(1, 13)]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def profile_environment(home: Path, workers: int) -> dict[str, str]:
    """ops/profiles/celery.env with a unique prefix for databases and Redis keys, free ports."""
    tag = f"mlops_bench_{os.getpid()}_{workers}w_"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AIRFLOW__", "MLFLOW_"))}
    s3 = f"http://127.0.0.1:{free_port()}"
    for line in (REPO / "ops" / "profiles" / "celery.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value.replace("mlops_celery_", tag).replace("http://127.0.0.1:9000", s3)
    env.update(stack_addresses(home))
    env.update({
        "MLOPS_REDIS_PREFIX": f"{tag}:", "MLOPS_FEAST_PROJECT": f"fd_{tag}",
        "MLOPS_CELERY_WORKERS": str(workers), "MLOPS_GATE_MARGIN": "-1",
    })
    return env


def members(sessions: dict[str, int]) -> dict[str, list]:
    """The processes of each session (psutil.Process objects). By session, not process group: the
    stack starts each worker as a session leader, and Airflow's task supervisor puts every task
    process into a process group of its own (so a group would miss the tasks themselves)."""
    import psutil

    by_session: dict[int, list] = {}
    for proc in psutil.process_iter():
        try:
            by_session.setdefault(os.getsid(proc.pid), []).append(proc)
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return {name: by_session.get(sid, []) for name, sid in sessions.items()}


class MemorySampler(threading.Thread):
    """Peak RSS and PSS (MiB) of each worker's session (its main process, pool, task supervisors
    and task processes), sampled every second."""

    def __init__(self, groups: dict[str, int]):
        super().__init__(daemon=True)
        self.groups, self.stop = groups, threading.Event()
        self.peak = {name: {"rss_mib": 0.0, "pss_mib": 0.0, "processes": 0} for name in groups}

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            for name, procs in members(self.groups).items():
                rss = pss = 0
                for proc in procs:
                    try:
                        info = proc.memory_full_info()
                        rss, pss = rss + info.rss, pss + info.pss
                    except psutil.Error:
                        continue
                peak = self.peak[name]
                peak["rss_mib"] = max(peak["rss_mib"], rss / 2**20)
                peak["pss_mib"] = max(peak["pss_mib"], pss / 2**20)
                peak["processes"] = max(peak["processes"], len(procs))
            self.stop.wait(1.0)


def months_workload(client, samples) -> dict:
    marks = {a: (client.asset_events(a) or [{"id": 0}])[-1]["id"] for a in ("feature_table", "deployed_model")}
    for month in MONTHS:
        samples.drop(month)
    landed = time.time()
    ft = client.wait_for_event("feature_table", marks["feature_table"], timeout=1800, poll=1)
    dm = client.wait_for_event("deployed_model", marks["deployed_model"], timeout=1800, poll=1)
    return {"months": len(MONTHS), "feature_table_s": _ts(ft["timestamp"]) - landed,
            "deployed_model_s": _ts(dm["timestamp"]) - landed}


def candidates_workload(client) -> dict:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the dag-processor parses the bench DAG within seconds
        try:
            client.get("/api/v2/dags/bench_candidates", retries=1)
            break
        except Exception:
            time.sleep(2)
    run = client.post("/api/v2/dags/bench_candidates/dagRuns", {"logical_date": None})
    run_id = run["dag_run_id"]
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        state = client.get(f"/api/v2/dags/bench_candidates/dagRuns/{run_id}")
        if state["state"] in ("success", "failed"):
            break
        time.sleep(1)
    assert state["state"] == "success", state
    trains = [t for t in client.task_instances("bench_candidates", run_id) if t["task_id"] == "train"]
    first = min(_ts(t["start_date"]) for t in trains)
    last = min(_ts(t["end_date"]) for t in trains), max(_ts(t["end_date"]) for t in trains)
    return {"candidates": len(trains), "train_wall_s": last[1] - first,
            "train_task_s": sorted(round(_ts(t["end_date"]) - _ts(t["start_date"]), 2) for t in trains),
            "run_s": _ts(state["end_date"]) - _ts(state["start_date"])}


def inner(args) -> dict:
    import settings
    from features import samples
    from ops import stack
    from ops.airflow_api import AirflowClient

    cfg = settings.get()
    samples.export()
    dags = cfg.home / "bench-dags"
    dags.mkdir(parents=True, exist_ok=True)
    for path in [*(REPO / "dags").glob("*.py"), REPO / "bench" / "dags" / "bench_candidates.py"]:
        (dags / path.name).symlink_to(path)
    started = time.perf_counter()
    try:
        stack.up(cfg, timeout=600, extra_env={"AIRFLOW__CORE__DAGS_FOLDER": str(dags)})
    except BaseException:  # leave no half-started stack, database or Redis key behind
        stack.down(cfg)
        stack.drop_databases(cfg)
        stack.drop_redis_keys(cfg)
        raise
    out = {"workers": cfg.celery_workers, "concurrency": cfg.celery_worker_concurrency,
           "stack_up_s": time.perf_counter() - started}
    groups = {f"airflow-worker-{i}": stack.running_pid(cfg, f"airflow-worker-{i}")
              for i in range(1, cfg.celery_workers + 1)}
    sampler = MemorySampler(groups)
    sampler.start()
    try:
        client = AirflowClient()
        if "months" not in args.skip:
            out["months"] = months_workload(client, samples)
            print(f"  {cfg.celery_workers} worker(s): 12 months -> deployed_model in "
                  f"{out['months']['deployed_model_s']:.1f}s", flush=True)
        if "candidates" not in args.skip:
            if "months" in args.skip:  # the candidates need features: two months first, untimed
                mark = (client.asset_events("feature_table") or [{"id": 0}])[-1]["id"]
                for month in MONTHS[:2]:
                    samples.drop(month)
                client.wait_for_event("feature_table", mark, timeout=900, poll=1)
            out["candidates"] = candidates_workload(client)
            print(f"  {cfg.celery_workers} worker(s): 4 candidates in {out['candidates']['train_wall_s']:.1f}s "
                  f"(tasks {out['candidates']['train_task_s']})", flush=True)
    except Exception as exc:  # keep what was measured (the peak memory so far) with the reason
        traceback.print_exc()
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        sampler.stop.set()
        sampler.join(5)
        out["peak_memory"] = sampler.peak
        stack.down(cfg)
        stack.drop_databases(cfg)
        stack.drop_redis_keys(cfg)
    return out


def efficiency(one: float, two: float) -> float:
    """T(1) / (2 x T(2)): 1.0 when doubling the workers halves the time."""
    return one / (2 * two)


def summarize(runs: list[dict]) -> dict:
    """The runs, and the scaling efficiency of each workload that both the 1- and the 2-worker run
    measured (a run that failed later still counts for the workloads it finished)."""
    result = {"date": time.strftime("%Y-%m-%d"), "runs": runs}
    by = {r["workers"]: r for r in runs}
    if 1 in by and 2 in by:
        result["efficiency"] = {
            name: efficiency(by[1][name][key], by[2][name][key])
            for name, key in (("months", "deployed_model_s"), ("candidates", "train_wall_s"))
            if name in by[1] and name in by[2]}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.celery_bench")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip", nargs="*", default=[], choices=["months", "candidates"])
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        Path(args.inner).write_text(json.dumps(inner(args)))
        return 0
    runs = []
    for workers in args.workers:
        home = Path(tempfile.mkdtemp(prefix=f"bench-celery-{workers}w-"))
        env = profile_environment(home, workers)
        if (REPO / ".local" / "samples").exists():
            shutil.copytree(REPO / ".local" / "samples", home / "samples")
        out = home / "result.json"
        cmd = [sys.executable, "-m", "bench.celery_bench", "--inner", str(out), "--skip", *args.skip]
        code = subprocess.run(cmd, env=env, cwd=REPO).returncode
        run = json.loads(out.read_text()) if out.exists() else {"workers": workers, "peak_memory": {}}
        if code != 0 or "error" in run:
            run.setdefault("error", f"exit {code}")
            print(f"celery bench with {workers} worker(s) failed ({run['error']}); logs in {home / 'logs'}",
                  file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)
        runs.append(run)  # a failed run still gives the peak memory and the workloads done before it
    result = summarize(runs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    label = "-".join(str(w) for w in args.workers) + "w" + ("-skip-" + "-".join(args.skip) if args.skip else "")
    (RESULTS / f"celery-{label}.json").write_text(json.dumps(result, indent=2))
    print("| workers | 12 months -> deployed s | 4 candidates wall s | peak PSS per worker MiB | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for r in runs:
        pss = ", ".join(f"{v['pss_mib']:.0f}" for v in r["peak_memory"].values())
        rss = ", ".join(f"{v['rss_mib']:.0f}" for v in r["peak_memory"].values())
        print(f"| {r['workers']} | {r.get('months', {}).get('deployed_model_s', float('nan')):.1f} | "
              f"{r.get('candidates', {}).get('train_wall_s', float('nan')):.1f} | {pss} | {rss} |")
    if "efficiency" in result:
        print(f"scaling efficiency (1 -> 2 workers): {result['efficiency']}")
    failed = [r["workers"] for r in runs if "error" in r]
    if failed:
        print(f"failed: {failed} worker(s): {[r['error'] for r in runs if 'error' in r]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
