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


def test_files_dropped_a_moment_apart_make_one_batch(home):
    """A month's flights and weather, then the next month's, copied one after the other: one batch."""
    store = storage.get()
    names = ["flights_2013-01.parquet", "weather_2013-01.parquet", "flights_2013-02.parquet",
             "weather_2013-02.parquet"]
    trigger = LandingFilesTrigger(store.url("landing"), poll_seconds=0.1, stable_seconds=0.5)

    async def drop_one_by_one():
        task = asyncio.ensure_future(_first_event(trigger, timeout=15))
        for name in names:  # each arrives after the previous one has been stable for a while
            store.write_bytes(store.url("landing", name), b"data")
            await asyncio.sleep(0.3)
        payload, _ = await task
        return payload

    assert asyncio.run(drop_one_by_one()) == {"files": sorted(store.url("landing", n) for n in names)}


def test_a_file_that_keeps_changing_holds_the_others_back_only_so_long(home):
    store = storage.get()
    done = store.url("landing", "flights_2013-01.parquet")
    growing = store.url("landing", "flights_2013-02.parquet")
    trigger = LandingFilesTrigger(store.url("landing"), poll_seconds=0.1, stable_seconds=0.2)

    async def one_done_one_growing():
        store.write_bytes(done, b"complete")
        task = asyncio.ensure_future(_first_event(trigger, timeout=15))
        for size in range(1, 40):  # changes every 0.1 s, for longer than the settle bound (2 s)
            store.write_bytes(growing, b"x" * size)
            await asyncio.sleep(0.1)
            if task.done():
                break
        return await task

    payload, waited = asyncio.run(one_done_one_growing())
    assert payload == {"files": [done]} and waited < 3.5
