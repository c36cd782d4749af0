"""Reading the inference log cheaply, and the trigger that waits for new traffic of the production version."""

from __future__ import annotations

import asyncio
import os
import posixpath
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from monitoring_helpers import register_version, write_log

import model_registry
import storage
from monitoring import inference, policy, sensor, state


def _rows(served: dict, n: int) -> pd.DataFrame:
    return served["same_season"].head(n)


def test_row_counts_come_from_parquet_footers_once(monitor_env, served, monkeypatch):
    urls = write_log(_rows(served, 1200), monitor_env.model_name, "1", per_file=500)
    import pyarrow.parquet as pq

    opened = []
    real = pq.ParquetFile
    monkeypatch.setattr(pq, "ParquetFile", lambda fh: opened.append(fh) or real(fh))
    cache: dict[str, int] = {}
    first = [inference.row_count(u, cache) for u in urls]
    second = [inference.row_count(u, cache) for u in urls]
    assert first == second == [500, 500, 200]
    assert len(opened) == 3


def test_new_files_skip_reported_unfinished_and_pre_baseline_files(monitor_env, served):
    name, store = monitor_env.model_name, storage.get()
    smoke, reported, fresh = (write_log(_rows(served, n), name, "4", per_file=n)[0] for n in (3, 100, 250))
    store.write_bytes(inference.version_url("4") + "/.partial.parquet.tmp", b"half a file")
    deployed = datetime.now(timezone.utc) - timedelta(minutes=5)
    old = (deployed - timedelta(minutes=1)).timestamp()
    os.utime(store._path(smoke), (old, old))  # the serving DAG's smoke requests, before the deployment
    state.record_baseline(name, "4", deployed)
    decision = policy.Decision(False, policy.NO_DRIFT, drifted=False)
    state.save(state.record_window(state.load(name), "4", "w1", [posixpath.basename(reported)], decision, {},
                                   deployed))
    assert inference.new_files(name, "4", {}) == [(fresh, 250)]


def test_rows_requested_before_the_baseline_are_not_traffic_even_in_a_later_file(monitor_env, served):
    name = monitor_env.model_name
    deployed = datetime.now(timezone.utc)
    # 100 rows, one every 20 ms, from a second before the deployment: the first 50 are smoke requests.
    [url] = write_log(_rows(served, 100), name, "6", per_file=100, start=deployed - timedelta(seconds=1))
    state.record_baseline(name, "6", deployed)
    assert inference.new_files(name, "6", {}) == [(url, 100)]  # the file was written after the deployment
    rows = inference.since_baseline(inference.read_window([url]), name, "6")
    assert len(rows) == 50 and (rows["request_time"] >= deployed).all()
    # The window planner counts the same rows: a window must not start at a smoke request's departure.
    from monitoring import windows

    since = windows.to_us(deployed.isoformat())
    assert len(inference.departures(url, {}, since)) == 50 and len(inference.departures(url, {})) == 100


@pytest.mark.integration
def test_production_version_follows_the_alias(monitor_env, mlflow_uri, served):
    name = monitor_env.model_name
    assert model_registry.production_version(mlflow_uri, name) is None  # no model registered yet
    register_version(name, served["reference"].head(50), {"test_roc_auc": 0.7}, alias=None)
    assert model_registry.production_version(mlflow_uri, name) is None  # registered, never deployed
    register_version(name, served["reference"].head(50), {"test_roc_auc": 0.7})
    assert model_registry.production_version(mlflow_uri, name) == "2"


async def _first_event(trigger: sensor.NewTrafficTrigger, timeout: float):
    gen = trigger.run()
    try:
        return await asyncio.wait_for(gen.__anext__(), timeout)
    finally:
        await gen.aclose()


@pytest.mark.integration
def test_trigger_waits_for_min_rows_of_the_production_version(monitor_env, mlflow_uri, served):
    name = monitor_env.model_name
    register_version(name, served["reference"].head(50), {"test_roc_auc": 0.7})  # v1 in production
    old_traffic = write_log(_rows(served, 1500), name, "1", per_file=500)
    v2 = register_version(name, served["reference"].head(50), {"test_roc_auc": 0.7})  # redeployed: fresh baseline
    trigger = sensor.NewTrafficTrigger(name, mlflow_uri, min_rows=1000, poll_seconds=0.2)
    kind, kwargs = trigger.serialize()
    assert kind == "monitoring.sensor.NewTrafficTrigger" and sensor.NewTrafficTrigger(**kwargs).min_rows == 1000

    async def scenario():
        waiting = asyncio.create_task(_first_event(trigger, timeout=30))
        await asyncio.sleep(1.0)
        assert not waiting.done()  # 1500 rows, but all served by v1, which is no longer in production
        first = await asyncio.to_thread(write_log, _rows(served, 600), name, v2, 600)
        await asyncio.sleep(1.0)
        assert not waiting.done()  # 600 < 1000
        second = await asyncio.to_thread(write_log, _rows(served, 500), name, v2, 500)
        t0 = time.monotonic()
        event = await waiting
        return event, first + second, time.monotonic() - t0

    event, v2_files, latency = asyncio.run(scenario())
    found = event.payload
    assert (found["version"], found["files"]) == (v2, sorted(v2_files))
    # 1,100 rows spanning weeks of departures: the window stretches to its 1,000th departure and the
    # 100 later rows carry over. Both files start with the same 500 flights, so those are the first
    # file's last 100 rows.
    assert (found["rows"], found["pending"]) == (1000, 100)
    assert list(found["window"]["carried"]) == [v2_files[0]]
    assert set(event.payload["files"]).isdisjoint(old_traffic)
    assert latency < 5


def test_trigger_keeps_waiting_through_an_unreachable_mlflow(monitor_env, served):
    trigger = sensor.NewTrafficTrigger(monitor_env.model_name, "http://127.0.0.1:9", min_rows=1, poll_seconds=0.1)
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(_first_event(trigger, timeout=1.0))


def test_sensor_starts_in_the_triggerer_with_the_settings():
    op = sensor.NewTrafficSensor(task_id="t", model_name="m", tracking_uri="http://mlflow", min_rows=7,
                                 poll_seconds=3.0, span_days=2.5)
    assert op.start_from_trigger
    assert op.start_trigger_args.trigger_cls == "monitoring.sensor.NewTrafficTrigger"
    assert op.start_trigger_args.trigger_kwargs == {"model_name": "m", "tracking_uri": "http://mlflow",
                                                    "min_rows": 7, "poll_seconds": 3.0, "span_days": 2.5}
    event = {"version": "3", "files": ["a"], "rows": 9}
    assert op.execute_complete({}, event) == event


def test_counting_state_and_baseline_work_on_s3(s3_monitor_env, served):
    """The prod profile's storage: footers read over S3, JSON state, baseline from LastModified."""
    name = s3_monitor_env.model_name
    assert storage.get().root.startswith("s3://")
    before = write_log(_rows(served, 300), name, "2", per_file=300)[0]
    time.sleep(1.5)  # S3 stamps LastModified to the second
    state.record_baseline(name, "2", datetime.now(timezone.utc))
    time.sleep(1.5)
    after = write_log(_rows(served, 700), name, "2", per_file=350)
    assert inference.new_files(name, "2", {}) == [(u, 350) for u in after]
    decision = policy.Decision(False, policy.NO_DRIFT, drifted=False)
    state.save(state.record_window(state.load(name), "2", "w", [posixpath.basename(after[0])], decision, {},
                                   datetime.now(timezone.utc)))
    assert inference.new_files(name, "2", {}) == [(after[1], 350)]
    assert before.startswith("s3://") and len(inference.read_window(after)) == 700
