"""Waiting in Airflow's triggerer until a count reaches a number: the loop the deferrable waits share
(serving's rollout stages wait for logged rows, training's drift runs for new labels).

Imported by the triggers' modules, which DAG files import: no heavy imports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

ENOUGH, TIME = "enough", "time"

# Airflow 3.3.2 (LocalExecutor) can fail a deferred task whose trigger fires within about 5 s of deferring:
# the deferring process's exit is reported after the resumed try was queued under the same key, and the
# scheduler marks that try failed ("finished with state success, but the task instance's state attribute
# is queued"; apache/airflow#66374, #72716 are the same family). Seen with a shadow filling in 4 s.
EARLIEST_EVENT_SECONDS = 8.0


async def count_until(count: Callable[[], int], at_least: int, deadline: float, poll_seconds: float, log,
                      what: str, earliest_seconds: float = EARLIEST_EVENT_SECONDS) -> dict:
    """Call `count` (in a thread, off the event loop) every `poll_seconds` until it reaches `at_least`, or
    until `deadline` (epoch seconds). An answer that comes early is held until `earliest_seconds` after the
    start. A count that fails is logged and counts as nothing this time (a part file being replaced).

    Returns {"status": ENOUGH or TIME, "count": the last count, "waited_seconds": ...}.
    """
    started = time.time()
    while True:
        try:
            n = await asyncio.to_thread(count)
        except Exception as exc:
            log.warning("counting %s failed: %s", what, exc)
            n = -1
        enough = n >= at_least
        too_soon = earliest_seconds - (time.time() - started)
        if enough and too_soon > 0 and time.time() < deadline:
            await asyncio.sleep(too_soon)
            continue
        if enough or time.time() >= deadline:
            return {"status": ENOUGH if enough else TIME, "count": max(n, 0), "waited_seconds": time.time() - started}
        await asyncio.sleep(poll_seconds)
