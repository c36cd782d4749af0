"""A Celery worker dies with SIGKILL while it trains a candidate: the chain still ends with one model.

On the celery profile (two workers, both serving `default` and `training`). A month is
dropped; as soon as a `train_candidate` task instance is running on one of the workers, that
worker's whole process tree (Celery's main process, its pool, the task's supervisor and the
task process, which sits in a process group of its own) is killed with SIGKILL, as when its
machine dies. Nothing tells Airflow: the
task instance stops heartbeating, the scheduler fails it after
`[scheduler] task_instance_heartbeat_timeout` (30 s in the profile), its retry (`retries=1`)
is queued again and the surviving worker runs it. The batch must end with exactly one
`registered_model` event and one model version, and be deployed.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from features import samples
from ops import stack
from ops.airflow_api import AirflowClient

pytestmark = pytest.mark.e2e

WORKLOAD = re.compile(r"Executing workload in Celery: .*task_id='train_candidate', dag_id='training', "
                      r"run_id='(?P<run>[^']+)', try_number=(?P<try>\d+), .*map_index=(?P<map>-?\d+)")


def started_candidates(cfg, worker: int) -> list[dict]:
    """The train_candidate workloads worker `worker` has started, from its log."""
    log = cfg.home / "logs" / f"airflow-worker-{worker}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return [{"run": m["run"], "try": int(m["try"]), "map": int(m["map"])} for m in WORKLOAD.finditer(text)]


def wait_for_running_candidate(cfg, client: AirflowClient, timeout: float = 300) -> tuple[int, dict]:
    """(worker index, workload) of a first-try train_candidate that Airflow reports as running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in range(1, cfg.celery_workers + 1):
            for w in started_candidates(cfg, worker):
                if w["try"] != 1:
                    continue
                tis = client.task_instances("training", w["run"])
                ti = next((t for t in tis if t["task_id"] == "train_candidate" and t["map_index"] == w["map"]), None)
                if ti and ti["state"] == "running":
                    return worker, w
        time.sleep(0.3)
    raise TimeoutError("no train_candidate task ran on a Celery worker")


def pool_processes(pgid: int) -> list[int]:
    """Pids of the Celery pool processes (ForkPoolWorker) in a worker's process group."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid and b"ForkPoolWorker" in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return out


@pytest.mark.parametrize("local_stack", ["celery"], indirect=True)
def test_workers_start_warm(local_stack):
    """Before any task: every pool process of both workers already has pandas and scikit-learn
    loaded (their compiled modules mapped), imported once in the worker before the pool forked;
    each task's process is forked from a pool process and inherits them."""
    cfg = local_stack
    for i in range(1, cfg.celery_workers + 1):
        pgid = stack.running_pid(cfg, f"airflow-worker-{i}")
        pools = pool_processes(pgid)
        assert len(pools) == cfg.celery_worker_concurrency, (i, pools)
        for pid in pools:
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert "/pandas/_libs/" in maps and "/sklearn/" in maps, f"worker {i} pool process {pid} is cold"
        log = (cfg.home / "logs" / f"airflow-worker-{i}.log").read_text(errors="replace")
        assert "mlops: preloaded" in log


def descendants(root: int) -> set[int]:
    """Every process below `root`, whatever its process group or session, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("local_stack", ["celery"], indirect=True)
def test_a_killed_worker_s_training_task_is_retried_on_the_other(local_stack):
    cfg = local_stack
    client = AirflowClient()
    assert cfg.celery_workers == 2 and cfg.task_heartbeat_timeout_seconds <= 60

    samples.drop("2013-01")
    victim, workload = wait_for_running_candidate(cfg, client)
    survivor = 3 - victim
    pgid = stack.running_pid(cfg, f"airflow-worker-{victim}")
    assert pgid is not None
    # The task process sits in a process group of its own (Airflow's task supervisor puts it
    # there): kill the worker's whole process tree, as a dying machine would.
    tree = descendants(pgid) | {pgid}
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed_at = time.monotonic()
    time.sleep(1)
    assert not [pid for pid in tree if alive(pid)], "a process of the killed worker survived"

    registered = client.wait_for_event("registered_model", timeout=420)
    deployed = client.wait_for_event("deployed_model", timeout=240)
    assert time.monotonic() - killed_at >= cfg.task_heartbeat_timeout_seconds  # it did wait for the timeout
    assert stack.running_pid(cfg, f"airflow-worker-{victim}") is None

    # The killed try failed for want of a heartbeat and the retry succeeded.
    tis = [t for t in client.task_instances("training", workload["run"]) if t["task_id"] == "train_candidate"]
    killed = next(t for t in tis if t["map_index"] == workload["map"])
    assert killed["state"] == "success" and killed["try_number"] == 2, killed
    assert all(t["state"] == "success" for t in tis), tis
    # ... on the surviving worker.
    retried = [w for w in started_candidates(cfg, survivor)
               if (w["run"], w["map"], w["try"]) == (workload["run"], workload["map"], 2)]
    assert retried, f"worker {survivor} never ran try 2 of {workload}"

    # One batch, one registered_model event, one model version, deployed.
    assert len(client.asset_events("registered_model")) == 1
    assert registered["source_run_id"] == workload["run"]
    from training import tracking

    versions = tracking.client(cfg).search_model_versions(f"name = '{cfg.model_name}'")
    assert [v.version for v in versions] == [str(registered["extra"]["version"])]
    assert str(deployed["extra"]["version"]) == str(registered["extra"]["version"])
