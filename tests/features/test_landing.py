"""The landing-zone trigger: which files it reports, and how soon."""

from __future__ import annotations

import asyncio
import time

import storage
from features.landing import LandingFilesTrigger


async def _first_event(trigger: LandingFilesTrigger, timeout: float) -> tuple[dict, float]:
    started = time.monotonic()

    async def first():
        async for event in trigger.run():
            return event.payload

    payload = await asyncio.wait_for(first(), timeout)
    return payload, time.monotonic() - started


def test_a_file_is_reported_once_it_stayed_unchanged_for_the_stable_time(home):
    store = storage.get()
    done = store.url("landing", "flights_2013-01.parquet")
    store.write_bytes(done, b"complete")
    store.write_bytes(store.url("landing", "_partial.parquet"), b"hidden")
    store.write_bytes(store.url("landing", "weather.parquet.tmp"), b"being written")

    # The first look finds the file; the second, after the stable time and not after a
    # whole poll interval, reports it.
    trigger = LandingFilesTrigger(store.url("landing"), poll_seconds=30, stable_seconds=0.5)
    payload, waited = asyncio.run(_first_event(trigger, timeout=10))

    assert payload == {"files": [done]}
    assert 0.5 <= waited < 5


def test_a_file_still_growing_is_not_reported(home):
    store = storage.get()
    growing = store.url("landing", "flights_2013-02.parquet")
    trigger = LandingFilesTrigger(store.url("landing"), poll_seconds=0.2, stable_seconds=1.0)

    async def write_then_wait():
        store.write_bytes(growing, b"x")
        task = asyncio.ensure_future(_first_event(trigger, timeout=15))
        for size in range(2, 8):  # a new size every 0.3 s, faster than the stable time
            await asyncio.sleep(0.3)
            store.write_bytes(growing, b"x" * size)
        written_at = time.monotonic()
        payload, _ = await task
        return payload, time.monotonic() - written_at

    payload, after_last_write = asyncio.run(write_then_wait())
    assert payload == {"files": [growing]}
    assert after_last_write >= 1.0
