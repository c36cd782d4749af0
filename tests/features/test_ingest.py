"""A landing batch end to end without a scheduler: quarantine, ledger, idempotency, features."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

import storage
from features import ingest, samples, tasks
from features.store import read_offline_table


@pytest.fixture
def landed(home, samples_dir):
    shutil.copytree(samples_dir, home.home / "samples", dirs_exist_ok=True)
    return storage.get()


def drop_bad(store: storage.Storage) -> str:
    good = (samples.sample_path("flights", "2013-02")).read_bytes()
    url = store.url("landing", "flights_truncated.parquet")
    store.write_bytes(url, good[: len(good) // 3])
    return url


def landing_files(store):
    return [i["url"] for i in store.list_files(store.url("landing"))]


def test_good_and_corrupt_files(landed):
    store = landed
    samples.drop("2013-02")
    drop_bad(store)
    summary = ingest.Batch("b1").ingest(landing_files(store))

    status = {f["name"]: f["status"] for f in summary["files"]}
    assert status == {"flights_2013-02.parquet": "accepted", "weather_2013-02.parquet": "accepted",
                      "flights_truncated.parquet": "quarantined"}
    assert summary["rows_in"] == summary["rows_accepted"] + summary["rows_quarantined"]
    assert summary["rows_quarantined"] == 1  # the wind_speed outlier
    assert landing_files(store) == []
    reason = store.read_json(store.url("quarantine", "b1__flights_truncated.parquet.reason.json"))
    assert reason["reason"].startswith("unreadable:")
    assert store.exists(store.url("quarantine", "b1__flights_truncated.parquet"))
    assert store.exists(store.url("processed", "b1__flights_2013-02.parquet"))
    rows = store.read_parquet(store.url("quarantine", "b1__weather_2013-02.parquet.rows.parquet"))
    assert rows["reason"].tolist() == ["range: wind_speed=1048.36 outside [0, 200]"]
    assert summary["event_time_min"].startswith("2013-02-01") and summary["event_time_max"].startswith("2013-03-01")


def test_same_content_twice_is_recognised_and_moved_aside(landed):
    store = landed
    samples.drop("2013-02", kinds=("weather",))
    first = ingest.Batch("b1").ingest(landing_files(store))
    store.write_bytes(store.url("landing", "weather_copy.parquet"),
                      samples.sample_path("weather", "2013-02").read_bytes())
    second = ingest.Batch("b2").ingest(landing_files(store))
    assert first["rows_accepted"] == 2009
    assert second["rows_accepted"] == 0 and second["files"][0]["status"] == "duplicate"
    assert second["files"][0]["duplicate_of"] == "b1"
    assert store.exists(store.url("processed", "_duplicates", "b2__weather_copy.parquet"))
    ledger = store.read_json(store.url("processed", "_ledger", f"{first['files'][0]['sha256']}.json"))
    assert ledger["duplicates"][0]["batch_id"] == "b2"


def test_retried_batch_gives_the_same_summary(landed):
    store = landed
    urls = samples.drop("2013-02")
    first = ingest.Batch("b1").ingest(urls)
    again = ingest.Batch("b1").ingest(urls)  # files are gone from landing: the manifest answers
    assert again == first


def test_features_are_written_once_per_batch_even_when_rerun(landed):
    urls = samples.drop("2013-01")
    batch = ingest.Batch("b1").ingest(urls)
    tasks.write_features(batch)
    written = tasks.write_features(batch)
    flights = read_offline_table("flights")
    assert len(flights) == 27004 and flights["flight_id"].is_unique
    assert set(written) == {"plane_attributes", "weather_hourly", "carrier_delay_stats", "route_delay_stats",
                            "origin_congestion"}
    extra = tasks.publish(batch, written)
    assert extra["rows_accepted"] == 27004 + 2226 and extra["content_hash"]
    assert [f["name"] for f in extra["files"]] == ["flights_2013-01.parquet", "weather_2013-01.parquet"]


def test_point_in_time_join_from_feast_has_no_future_values(feature_data):
    from features.names import FEATURE_SERVICE
    from features.store import feature_store

    flights = read_offline_table("flights").sample(2000, random_state=1)
    store = feature_store()
    joined = store.get_historical_features(
        entity_df=flights[["flight_id", "origin", "tailnum", "carrier", "route", "event_timestamp"]],
        features=store.get_feature_service(FEATURE_SERVICE),
    ).to_df()
    stats = read_offline_table("carrier_delay_stats")
    merged = joined.merge(stats, on=["carrier", "carrier_late_rate_7d"], suffixes=("", "_stat"))
    # Every joined value was stamped at or before the flight's own time.
    first_stamp = merged.groupby("flight_id")["event_timestamp_stat"].min()
    flight_time = joined.set_index("flight_id")["event_timestamp"]
    assert (first_stamp <= flight_time.loc[first_stamp.index]).all()
    assert joined["temp"].notna().mean() > 0.95
