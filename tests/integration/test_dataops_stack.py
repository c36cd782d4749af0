"""DataOps on the real stack: scheduler, dag-processor, triggerer and api-server.

A good month and a corrupt file are dropped into landing; exactly one
`feature_table` event must come, its extra a `datasets.FeatureTableExtra` of the
batch, and the corrupt file must sit in quarantine with its reason. The same
content dropped again must change nothing.
"""

from __future__ import annotations

import time

import pytest

import datasets
import storage
from features import samples
from ops.airflow_api import AirflowClient

pytestmark = pytest.mark.integration


def wait_for_run_that_ingested(client: AirflowClient, after: str, timeout: float = 240) -> dict:
    """The finished dataops run whose sensor picked files up after `after` (ISO, UTC).

    The continuous DAG's next run starts, and defers, before anything is dropped, so the run
    is found by when its sensor fired, not by when it started.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in client.dag_runs("dataops"):
            if run["state"] not in ("success", "failed"):
                continue
            tis = {t["task_id"]: t for t in client.task_instances("dataops", run["dag_run_id"])}
            fired = tis["wait_for_landing_files"]["end_date"] or ""
            if fired > after:
                return run
        time.sleep(1)
    raise TimeoutError("no dataops run ingested the dropped file")


def _group_pids(pgid: int) -> set[int]:
    import subprocess

    out = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_the_stack_listens_on_loopback_only_and_the_landing_zone_exists(local_stack):
    """What a new user meets after `make up`: the landing folder the README copies into, no open ports."""
    import re
    import subprocess

    from ops import stack

    cfg = local_stack
    store = storage.get()
    if store.protocol == "file":
        assert store.fs.isdir(store._path(store.url("landing")))
    pids = {p for pid in stack.status(cfg).values() if pid for p in _group_pids(pid)}
    listeners = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    ours = [line for line in listeners if any(f"pid={p}," in line for p in pids)]
    assert ours, "no listener of the stack found"
    addresses = [line.split()[3] for line in ours]
    assert all(re.match(r"(127\.0\.0\.1|\[::1\]|\[::ffff:127\.0\.0\.1\]):\d+$", a) for a in addresses), addresses


def test_landing_to_feature_table(local_stack):
    client = AirflowClient()
    store = storage.get()
    good = samples.sample_path("flights", "2013-01").read_bytes()

    samples.drop("2013-01")
    store.write_bytes(store.url("landing", "flights_corrupt.parquet"), good[: len(good) // 2])
    event = client.wait_for_event("feature_table", timeout=180)

    extra = event["extra"]
    datasets.check_extra(datasets.feature_table, extra)
    names = {f["name"] for f in extra["files"]}
    assert {"flights_2013-01.parquet", "weather_2013-01.parquet"} <= names
    accepted = {f["name"]: f for f in extra["files"] if f["status"] == "accepted"}
    assert accepted["flights_2013-01.parquet"]["rows_accepted"] == 27004
    assert accepted["weather_2013-01.parquet"]["rows_accepted"] == 2226
    assert extra["rows_accepted"] == 27004 + 2226
    assert extra["rows_in"] == extra["rows_accepted"] + extra["rows_quarantined"]
    assert extra["event_time_min"].startswith("2013-01-01") and extra["content_hash"]

    # The corrupt file may have been picked up in the same batch or the next one.
    deadline = time.monotonic() + 60
    reasons = []
    while time.monotonic() < deadline and not reasons:
        reasons = [i["url"] for i in store.list_files(store.url("quarantine"))
                   if i["url"].endswith("flights_corrupt.parquet.reason.json")]
        time.sleep(1)
    assert reasons, "the corrupt file did not reach quarantine"
    assert store.read_json(reasons[0])["reason"].startswith("unreadable:")

    # Same content again: recognised by its hash, moved aside, no second event.
    mark = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    samples.drop("2013-01", kinds=("weather",))
    run = wait_for_run_that_ingested(client, mark)
    assert run["state"] == "success"
    states = {t["task_id"]: t["state"] for t in client.task_instances("dataops", run["dag_run_id"])}
    assert states["write_features"] == "skipped" and states["materialize_online"] == "skipped"
    assert len(client.asset_events("feature_table")) == 1
    assert store.list_files(store.url("landing")) == []
    assert len(store.list_files(store.url("processed", "_duplicates"))) == 1

