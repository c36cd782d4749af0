"""Waiting for a window of served traffic: a deferrable sensor whose trigger polls in the triggerer.

Each poll asks MLflow which version holds the `production` alias
(`model_registry.production_version`: one small REST call, no mlflow import), then
reads the scheduled departures of that version's log files not yet reported and
written since its baseline (one parquet column, cached per file). The trigger fires
once the next window has closed (`monitoring.windows`: `span_days` of departures
and at least `min_rows` rows), with the version, the files and the window's cuts:
exactly the rows the report covers. When production moves to a new version the
sensor follows it at the next poll, starting from zero: the new version's fresh
baseline.

This module is imported by the DAG file, so it stays light (no pandas, no mlflow).
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, StartTriggerArgs, TriggerEvent

def check_traffic(model_name: str, tracking_uri: str, cache: dict, span_days: float, min_rows: int) -> dict[str, Any]:
    """{version, files, rows, pending, window}: the production version's next window, once it has closed.

    `window` (`monitoring.windows.Window.as_dict`, by file URL) is None while it is still
    open; `files` and `rows` are then empty, and `pending` counts the rows waiting.
    """
    from model_registry import production_version
    from monitoring import inference, state, windows

    version = production_version(tracking_uri, model_name)
    if version is None:
        return {"version": None, "files": [], "rows": 0, "pending": 0, "window": None}
    current = state.load(model_name)
    urls = [u for u, _ in inference.new_files(model_name, version, cache.setdefault("rows", {}))]
    deps = cache.setdefault("departures", {})
    for key in [k for k in deps if k[0] not in urls]:
        deps.pop(key)  # reported or superseded: keep the cache as small as the backlog
    baseline = state.load_baseline(model_name, version)
    since = windows.to_us(baseline["deployed_at"]) if baseline else None
    by_name = {posixpath.basename(u): u for u in urls}
    cuts = {n: windows.to_us(c) for n, c in state.carried_files(current, version).items() if n in by_name}
    window = windows.plan({n: inference.departures(u, deps, since) for n, u in by_name.items()}, cuts,
                          windows.to_us(state.judged_until(current, version)), int(span_days * windows.US_PER_DAY),
                          min_rows)
    if window is None:
        pending = sum(len(windows.unjudged(deps[(u, since)], cuts.get(n))) for n, u in by_name.items())
        return {"version": version, "files": [], "rows": 0, "pending": pending, "window": None}
    found = window.as_dict()
    found["files"] = [by_name[n] for n in found["files"]]
    found["carried"] = {by_name[n]: c for n, c in found["carried"].items()}
    found["since"] = {by_name[n]: c for n, c in found["since"].items()}
    return {"version": version, "files": found["files"], "rows": window.rows, "pending": window.pending,
            "window": found}


class NewTrafficTrigger(BaseTrigger):
    """Fires with the production version's next window (`check_traffic`) once it has closed."""

    def __init__(self, model_name: str, tracking_uri: str, min_rows: int, poll_seconds: float = 5.0,
                 span_days: float = 7.0):
        super().__init__()
        self.model_name = model_name
        self.tracking_uri = tracking_uri
        self.min_rows = min_rows
        self.poll_seconds = poll_seconds
        self.span_days = span_days

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "monitoring.sensor.NewTrafficTrigger",
            {
                "model_name": self.model_name,
                "tracking_uri": self.tracking_uri,
                "min_rows": self.min_rows,
                "poll_seconds": self.poll_seconds,
                "span_days": self.span_days,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        cache: dict = {}
        last_seen = None
        while True:
            try:
                found = await asyncio.to_thread(check_traffic, self.model_name, self.tracking_uri, cache,
                                                self.span_days, self.min_rows)
            except Exception as exc:  # MLflow restarting, storage hiccup: keep waiting, say why
                self.log.warning("traffic check failed, retrying in %ss: %s", self.poll_seconds, exc)
            else:
                if (found["version"], found["pending"]) != last_seen:
                    last_seen = (found["version"], found["pending"])
                    self.log.info("production version %s: %d rows not judged yet; a window closes past %g days "
                                  "of departures with at least %d rows", found["version"], found["pending"],
                                  self.span_days, self.min_rows)
                if found["window"] is not None:
                    yield TriggerEvent(found)
                    return
            await asyncio.sleep(self.poll_seconds)


class NewTrafficSensor(BaseSensorOperator):
    """Waits, in the triggerer, for the production version's next window of served rows to close.

    Starts straight in the triggerer (no worker slot held while waiting) and
    returns `check_traffic`'s {version, files, rows, pending, window} as its XCom value.
    """

    start_trigger_args = StartTriggerArgs(
        trigger_cls="monitoring.sensor.NewTrafficTrigger",
        trigger_kwargs={},
        next_method="execute_complete",
        next_kwargs=None,
        timeout=None,
    )
    start_from_trigger = True

    def __init__(self, *, model_name: str, tracking_uri: str, min_rows: int, poll_seconds: float,
                 span_days: float = 7.0, **kwargs):
        kwargs.setdefault("timeout", timedelta(days=1).total_seconds())
        super().__init__(**kwargs)
        self.model_name = model_name
        self.tracking_uri = tracking_uri
        self.min_rows = min_rows
        self.poll_seconds = poll_seconds
        self.span_days = span_days
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=self.start_trigger_args.trigger_cls,
            trigger_kwargs=self._trigger_kwargs(),
            next_method="execute_complete",
            next_kwargs=None,
            timeout=timedelta(seconds=self.timeout),
        )

    def _trigger_kwargs(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "tracking_uri": self.tracking_uri,
                "min_rows": self.min_rows, "poll_seconds": self.poll_seconds, "span_days": self.span_days}

    def execute(self, context) -> None:
        # Only reached when the task is not started from the trigger (for example dag.test()).
        self.defer(trigger=NewTrafficTrigger(**self._trigger_kwargs()), method_name="execute_complete",
                   timeout=timedelta(seconds=self.timeout))

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = dict(event or {})
        self.log.info("version %s: %d new rows in %d file(s)", event.get("version"), event.get("rows", 0),
                      len(event.get("files") or []))
        return event
