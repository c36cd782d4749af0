"""Waiting for enough new traffic: a deferrable sensor whose trigger polls in the triggerer.

Each poll asks MLflow which version holds the `production` alias
(`model_registry.production_version`: one small REST call, no mlflow import), then counts the rows of that
version's inference log files not yet reported and written since its baseline
(parquet footers, cached per file). The trigger fires once they reach
`min_rows`, with the version and the exact file list: that list is the window
the report covers. When production moves to a new version the count follows
it at the next poll, starting from zero: the new version's fresh baseline.

This module is imported by the DAG file, so it stays light (no pandas, no mlflow).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, StartTriggerArgs, TriggerEvent

def check_traffic(model_name: str, tracking_uri: str, counts: dict[str, int]) -> dict[str, Any]:
    """{version, files, rows}: the production version's log files not yet reported."""
    from model_registry import production_version
    from monitoring import inference

    version = production_version(tracking_uri, model_name)
    if version is None:
        return {"version": None, "files": [], "rows": 0}
    files = inference.new_files(model_name, version, counts)
    for url in set(counts) - {u for u, _ in files}:
        counts.pop(url)  # reported or superseded: keep the cache as small as the backlog
    return {"version": version, "files": [u for u, _ in files], "rows": sum(n for _, n in files)}


class NewTrafficTrigger(BaseTrigger):
    """Fires with {version, files, rows} once the production version has `min_rows` unreported rows."""

    def __init__(self, model_name: str, tracking_uri: str, min_rows: int, poll_seconds: float = 5.0):
        super().__init__()
        self.model_name = model_name
        self.tracking_uri = tracking_uri
        self.min_rows = min_rows
        self.poll_seconds = poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "monitoring.sensor.NewTrafficTrigger",
            {
                "model_name": self.model_name,
                "tracking_uri": self.tracking_uri,
                "min_rows": self.min_rows,
                "poll_seconds": self.poll_seconds,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        counts: dict[str, int] = {}
        last_seen = None
        while True:
            try:
                found = await asyncio.to_thread(check_traffic, self.model_name, self.tracking_uri, counts)
            except Exception as exc:  # MLflow restarting, storage hiccup: keep waiting, say why
                self.log.warning("traffic check failed, retrying in %ss: %s", self.poll_seconds, exc)
            else:
                if (found["version"], found["rows"]) != last_seen:
                    last_seen = (found["version"], found["rows"])
                    self.log.info("production version %s: %d new rows in %d file(s), waiting for %d",
                                  found["version"], found["rows"], len(found["files"]), self.min_rows)
                if found["version"] is not None and found["rows"] >= self.min_rows:
                    yield TriggerEvent(found)
                    return
            await asyncio.sleep(self.poll_seconds)


class NewTrafficSensor(BaseSensorOperator):
    """Waits, in the triggerer, for `min_rows` new rows served by the production version.

    Starts straight in the triggerer (no worker slot held while waiting) and
    returns {version, files, rows} as its XCom value.
    """

    start_trigger_args = StartTriggerArgs(
        trigger_cls="monitoring.sensor.NewTrafficTrigger",
        trigger_kwargs={},
        next_method="execute_complete",
        next_kwargs=None,
        timeout=None,
    )
    start_from_trigger = True

    def __init__(self, *, model_name: str, tracking_uri: str, min_rows: int, poll_seconds: float, **kwargs):
        kwargs.setdefault("timeout", timedelta(days=1).total_seconds())
        super().__init__(**kwargs)
        self.model_name = model_name
        self.tracking_uri = tracking_uri
        self.min_rows = min_rows
        self.poll_seconds = poll_seconds
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=self.start_trigger_args.trigger_cls,
            trigger_kwargs=self._trigger_kwargs(),
            next_method="execute_complete",
            next_kwargs=None,
            timeout=timedelta(seconds=self.timeout),
        )

    def _trigger_kwargs(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "tracking_uri": self.tracking_uri,
                "min_rows": self.min_rows, "poll_seconds": self.poll_seconds}

    def execute(self, context) -> None:
        # Only reached when the task is not started from the trigger (for example dag.test()).
        self.defer(trigger=NewTrafficTrigger(**self._trigger_kwargs()), method_name="execute_complete",
                   timeout=timedelta(seconds=self.timeout))

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = dict(event or {})
        self.log.info("version %s: %d new rows in %d file(s)", event.get("version"), event.get("rows", 0),
                      len(event.get("files") or []))
        return event
