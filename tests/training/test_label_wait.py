"""A drift-triggered run waits, in the triggerer, for labelled flights newer than the champion's data."""

from __future__ import annotations

import asyncio
import threading
import time

import pandas as pd

from features.store import FLIGHTS_TABLE, write_table
from training import sensor
from training.tasks import labelled_flights_since

SINCE = "2013-07-01T00:00:00+00:00"


def _flights(first_id: int, n: int, start: str) -> pd.DataFrame:
    return pd.DataFrame({"flight_id": [f"f{i}" for i in range(first_id, first_id + n)],
                         "event_timestamp": pd.date_range(start, periods=n, freq="10min", tz="UTC")})


def _fire(trigger) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first())


def test_labelled_flights_are_counted_once_and_only_after_the_champions_data(home):
    write_table(FLIGHTS_TABLE, "old", _flights(0, 50, "2013-06-30"))
    write_table(FLIGHTS_TABLE, "new", _flights(50, 100, "2013-07-02"))
    write_table(FLIGHTS_TABLE, "again", _flights(50, 10, "2013-07-02"))  # delivered twice: counted once
    assert labelled_flights_since(SINCE) == 100
    assert labelled_flights_since(None) == 150


def test_the_wait_ends_when_the_labels_arrive(home, monkeypatch):
    monkeypatch.setattr(sensor.NewLabelsTrigger, "EARLIEST_EVENT_SECONDS", 0.0)
    write_table(FLIGHTS_TABLE, "new", _flights(0, 100, "2013-07-02"))
    arrive = threading.Timer(1.0, write_table, (FLIGHTS_TABLE, "later", _flights(100, 60, "2013-07-03")))
    arrive.start()
    t0 = time.monotonic()
    event = _fire(sensor.NewLabelsTrigger(SINCE, 150, deadline=time.time() + 60, poll_seconds=0.2))
    arrive.join()
    assert event["status"] == sensor.ENOUGH and event["labels"] == 160
    assert 1.0 <= time.monotonic() - t0 < 10


def test_the_wait_ends_at_its_deadline_with_what_arrived(home):
    write_table(FLIGHTS_TABLE, "new", _flights(0, 100, "2013-07-02"))
    event = _fire(sensor.NewLabelsTrigger(SINCE, 150, deadline=time.time() + 0.5, poll_seconds=0.2))
    assert event["status"] == sensor.TIME and event["labels"] == 100


def test_an_early_answer_waits_out_airflows_race(home):
    write_table(FLIGHTS_TABLE, "new", _flights(0, 100, "2013-07-02"))
    trigger = sensor.NewLabelsTrigger(SINCE, 10, deadline=time.time() + 60, poll_seconds=0.2)
    trigger.EARLIEST_EVENT_SECONDS = 1.0
    t0 = time.monotonic()
    assert _fire(trigger)["status"] == sensor.ENOUGH and time.monotonic() - t0 >= 1.0


def test_the_trigger_serializes_to_what_rebuilds_it():
    trigger = sensor.NewLabelsTrigger(SINCE, 18_000, deadline=123.0, poll_seconds=5.0)
    path, kwargs = trigger.serialize()
    assert path == "training.sensor.NewLabelsTrigger"
    assert sensor.NewLabelsTrigger(**kwargs).serialize() == (path, kwargs)
