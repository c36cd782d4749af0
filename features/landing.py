"""The landing zone watcher: a deferrable sensor and its trigger.

Works on any fsspec URL (`file://` or `s3://`). A file is picked up only once
its size and modification stamp have held still for `stable_seconds`, so a
file still being copied is never read half-way. Files dropped together make one
batch: the trigger fires when every file it sees is stable, that is when the
landing zone has been quiet for `stable_seconds` (a file that keeps changing
holds the others back for at most `SETTLE_FACTOR` times that). Hidden files (`.name`) and
`*.tmp` / `*.part` files are ignored: writers use them while copying.
This module is imported by the DAG file, so it stays light (no pandas).
"""

from __future__ import annotations

import asyncio
import posixpath
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, StartTriggerArgs, TriggerEvent

import storage

IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", ".reason.json")
SETTLE_FACTOR = 10


def candidate_files(landing_url: str) -> dict[str, tuple]:
    """Files in landing that are not being written, with a signature that changes on write."""
    store = storage.get()
    found = {}
    for info in store.list_files(landing_url):
        name = posixpath.basename(info["url"])
        if name.startswith((".", "_")) or name.endswith(IGNORED_SUFFIXES):
            continue
        stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or ""
        found[info["url"]] = (int(info.get("size") or 0), str(stamp))
    return found


class LandingFilesTrigger(BaseTrigger):
    """Fires with the list of landing files whose signature stayed the same for `stable_seconds`."""

    def __init__(self, landing_url: str, poll_seconds: float = 2.0, stable_seconds: float = 1.0):
        super().__init__()
        self.landing_url = landing_url
        self.poll_seconds = poll_seconds
        self.stable_seconds = stable_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "features.landing.LandingFilesTrigger",
            {
                "landing_url": self.landing_url,
                "poll_seconds": self.poll_seconds,
                "stable_seconds": self.stable_seconds,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        first_seen: dict[str, tuple[tuple, float]] = {}
        while True:
            files = await asyncio.to_thread(candidate_files, self.landing_url)
            now = time.monotonic()
            first_seen = {
                url: first_seen[url] if url in first_seen and first_seen[url][0] == sig else (sig, now)
                for url, sig in files.items()
            }
            ready = sorted(u for u, (_, t0) in first_seen.items() if now - t0 >= self.stable_seconds)
            settling = len(ready) < len(first_seen)
            ready_for = max((now - t0 - self.stable_seconds for _, t0 in first_seen.values()), default=0.0)
            if ready and (not settling or ready_for >= (SETTLE_FACTOR - 1) * self.stable_seconds):
                self.log.info("landing files ready: %s", ready)
                yield TriggerEvent({"files": ready})
                return
            # A file seen is stable or not after `stable_seconds`: look again then, not a whole poll later.
            await asyncio.sleep(min(self.poll_seconds, self.stable_seconds) if first_seen else self.poll_seconds)


class LandingZoneSensor(BaseSensorOperator):
    """Waits, in the triggerer, for complete files in the landing zone; returns their URLs.

    It starts straight in the triggerer (no worker slot is held while waiting)
    and returns the file list as its XCom value.
    """

    start_trigger_args = StartTriggerArgs(
        trigger_cls="features.landing.LandingFilesTrigger",
        trigger_kwargs={},
        next_method="execute_complete",
        next_kwargs=None,
        timeout=None,
    )
    start_from_trigger = True

    def __init__(self, *, landing_url: str, poll_seconds: float, stable_seconds: float, **kwargs):
        kwargs.setdefault("timeout", timedelta(days=1).total_seconds())
        super().__init__(**kwargs)
        self.landing_url = landing_url
        self.poll_seconds = poll_seconds
        self.stable_seconds = stable_seconds
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=self.start_trigger_args.trigger_cls,
            trigger_kwargs={
                "landing_url": landing_url,
                "poll_seconds": poll_seconds,
                "stable_seconds": stable_seconds,
            },
            next_method="execute_complete",
            next_kwargs=None,
            timeout=timedelta(seconds=self.timeout),
        )

    def execute(self, context) -> None:
        # Only reached when the task is not started from the trigger (for example dag.test()).
        self.defer(
            trigger=LandingFilesTrigger(self.landing_url, self.poll_seconds, self.stable_seconds),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> list[str]:
        files = list((event or {}).get("files") or [])
        self.log.info("%d file(s) to ingest: %s", len(files), files)
        return files
