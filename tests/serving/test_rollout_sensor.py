"""The rollout stage's trigger: it fires on enough rows or at the deadline, never in the first seconds."""

from __future__ import annotations

import asyncio
import time

from serving import rollout
from serving.sensor import RolloutRowsTrigger


def first_event(trigger: RolloutRowsTrigger) -> dict:
    async def run():
        async for event in trigger.run():
            return event.payload
    return asyncio.run(run())


def test_enough_rows_at_once_still_wait_the_earliest_event_time(monkeypatch):
    monkeypatch.setattr(rollout, "count_rows", lambda version, role, since: 500)
    trigger = RolloutRowsTrigger("2", "shadow", 0.0, min_rows=200, deadline=time.time() + 60, poll_seconds=0.05)
    trigger.EARLIEST_EVENT_SECONDS = 0.6
    event = first_event(trigger)
    assert event["status"] == "enough" and event["rows"] == 500
    assert 0.6 <= event["waited_seconds"] < 5


def test_rows_that_arrive_later_fire_when_counted_and_time_runs_out_without_them(monkeypatch):
    counts = iter([10, 50, 250, 250])
    monkeypatch.setattr(rollout, "count_rows", lambda version, role, since: next(counts))
    trigger = RolloutRowsTrigger("2", "canary", 0.0, min_rows=200, deadline=time.time() + 60, poll_seconds=0.05)
    trigger.EARLIEST_EVENT_SECONDS = 0.0
    assert first_event(trigger)["status"] == "enough"

    monkeypatch.setattr(rollout, "count_rows", lambda version, role, since: 10)
    trigger = RolloutRowsTrigger("2", "canary", 0.0, min_rows=200, deadline=time.time() + 0.3, poll_seconds=0.05)
    event = first_event(trigger)
    assert event["status"] == "time" and event["rows"] == 10 and event["waited_seconds"] >= 0.3
