"""The inference log writes batches atomically, by rows, by time and on close, and loses nothing."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pandas as pd
import pytest

import storage
from features.compute import MODEL_FEATURES
from serving.inference_log import COLUMNS, InferenceLog


def row(i: int, version: str = "3") -> dict:
    when = datetime(2013, 3, 1, 12, tzinfo=timezone.utc)
    out = {
        "request_id": f"r{i}", "request_time": datetime.now(timezone.utc), "model_name": "flight_delay",
        "model_version": version, "carrier": "UA", "flight": 1545, "tailnum": None if i % 2 else "N14228",
        "origin": "EWR", "dest": "IAH", "route": "EWR-IAH", "sched_dep_ts": when,
        "flight_id": "UA1545-EWR-201303011200", "probability": 0.25, "prediction": 0, "latency_ms": 1.5,
    }
    out.update({name: float(i) for name in MODEL_FEATURES})
    return out


@pytest.fixture
def store(tmp_path) -> storage.Storage:
    return storage.Storage((tmp_path / "storage").as_uri())


def written(store: storage.Storage, version: str = "3") -> list[dict]:
    return store.list_files(store.url("inference", f"version={version}"))


def read_all(store: storage.Storage, version: str = "3") -> pd.DataFrame:
    files = written(store, version)
    return pd.concat([store.read_parquet(f["url"]) for f in files], ignore_index=True) if files else pd.DataFrame()


def test_close_writes_every_buffered_row_with_the_contract_columns(store):
    log = InferenceLog(flush_rows=10_000, flush_seconds=3600, store=store)
    log.start()
    log.append([row(i) for i in range(7)])
    assert written(store) == []

    log.close()

    df = read_all(store)
    assert list(df.columns) == COLUMNS
    assert sorted(df["request_id"]) == sorted(f"r{i}" for i in range(7))
    assert str(df["request_time"].dtype) == "datetime64[us, UTC]"
    assert str(df["sched_dep_ts"].dtype) == "datetime64[us, UTC]"
    assert df[MODEL_FEATURES].dtypes.eq("float64").all()
    assert df["tailnum"].isna().sum() == 3


def wait_for_a_file(store, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not written(store) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_full_buffer_is_written_without_waiting_for_the_timer(store):
    log = InferenceLog(flush_rows=5, flush_seconds=3600, store=store)
    log.start()
    try:
        log.append([row(i) for i in range(5)])
        wait_for_a_file(store)
        assert len(read_all(store)) == 5
    finally:
        log.close()


def test_the_timer_writes_a_partial_batch(store):
    log = InferenceLog(flush_rows=1000, flush_seconds=0.3, store=store)
    log.start()
    try:
        log.append([row(1)])
        wait_for_a_file(store)
        assert len(read_all(store)) == 1
    finally:
        log.close()


def test_one_file_per_model_version_under_its_folder(store):
    log = InferenceLog(flush_rows=1000, flush_seconds=3600, store=store)
    log.append([row(1, "3"), row(2, "4"), row(3, "3")])
    assert log.flush() == 3
    assert len(read_all(store, "3")) == 2 and len(read_all(store, "4")) == 1
    name = written(store, "4")[0]["url"].rsplit("/", 1)[1]
    assert name.endswith(".parquet") and name.count("-") == 1 and name[:8].isdigit()


def test_a_failed_write_keeps_the_rows_for_the_next_flush(store, monkeypatch):
    log = InferenceLog(flush_rows=1000, flush_seconds=3600, store=store)
    log.append([row(i) for i in range(3)])
    real = store.write_bytes
    monkeypatch.setattr(storage.Storage, "write_bytes", lambda self, url, data: (_ for _ in ()).throw(OSError("down")))
    assert log.flush() == 0
    assert log.pending == 3
    monkeypatch.setattr(storage.Storage, "write_bytes", lambda self, url, data: real(url, data))
    assert log.flush() == 3
    assert len(read_all(store)) == 3 and log.pending == 0
