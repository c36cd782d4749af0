"""Waiting for the model server to serve a version: a deferrable sensor and its trigger.

After the `production` alias moves, the serving DAG waits until GET /version on the
model server reports the new version. It asks once before deferring (the server has
usually loaded it already); any longer wait runs in the triggerer, so no worker slot
is held. The trigger itself enforces the deadline (`deploy_timeout_seconds`)
and fires with `status: timeout` and the last version it saw, so the task fails
with a reason the rollback can report. The deadline is a wall-clock time, so a
triggerer restart does not extend it. Imported by the DAG file: no heavy imports.

The rollout's sensor waits the same way, before the alias moves, until the shadow
(or the canary) has logged enough rows or its time is up (`RolloutSensor`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import BaseTrigger, TriggerEvent

import waiting
from serving.failures import FAILURE_KEY


class ServerVersionTrigger(BaseTrigger):
    """Fires when GET {server_url}/version reports `version`, or at `deadline` (epoch seconds)."""

    def __init__(self, server_url: str, version: str, deadline: float, poll_seconds: float = 1.0):
        super().__init__()
        self.server_url = server_url.rstrip("/")
        self.version = str(version)
        self.deadline = float(deadline)
        self.poll_seconds = float(poll_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "serving.sensor.ServerVersionTrigger",
            {"server_url": self.server_url, "version": self.version, "deadline": self.deadline,
             "poll_seconds": self.poll_seconds},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import httpx

        started = time.time()
        async with httpx.AsyncClient(base_url=self.server_url, timeout=5.0) as http:
            while True:
                seen = await _reported_version(http)
                if seen == self.version:
                    yield TriggerEvent({"status": "ok", "version": seen, "waited_seconds": time.time() - started})
                    return
                if time.time() >= self.deadline:
                    yield TriggerEvent({"status": "timeout", "version": self.version, "last_seen": seen,
                                        "waited_seconds": time.time() - started})
                    return
                await asyncio.sleep(self.poll_seconds)


async def _reported_version(http) -> str:
    import httpx

    try:
        resp = await http.get("/version")
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    return _version_in(resp)


def reported_version_now(server_url: str) -> str:
    """The same answer as the trigger's, asked once, synchronously."""
    import httpx

    try:
        resp = httpx.get(f"{server_url.rstrip('/')}/version", timeout=5.0)
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    return _version_in(resp)


def _version_in(resp) -> str:
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}"
    return str(resp.json().get("version"))


class ServerVersionSensor(BaseSensorOperator):
    """Waits, in the triggerer, until the model server reports `promotion["version"]`.

    `promotion` is the promote task's output (an XComArg, resolved at run time).
    Returns the trigger's event; on timeout records the reason (XCom `failure`) and fails.
    """

    template_fields = ("promotion",)

    def __init__(self, *, promotion, server_url: str, deploy_timeout_seconds: float, poll_seconds: float = 1.0,
                 **kwargs):
        kwargs.setdefault("timeout", deploy_timeout_seconds + 60)  # a net under the trigger's own deadline
        super().__init__(**kwargs)
        self.promotion = promotion
        self.server_url = server_url
        self.deploy_timeout_seconds = deploy_timeout_seconds
        self.poll_seconds = poll_seconds

    def execute(self, context) -> dict | None:
        version = str(self.promotion["version"])
        # reload_server waits for the load, so the server usually serves the version already:
        # then there is nothing to wait for (a deferral round trip costs seconds).
        if reported_version_now(self.server_url) == version:
            return self.execute_complete(context, {"status": "ok", "version": version, "waited_seconds": 0.0})
        self.defer(
            trigger=ServerVersionTrigger(self.server_url, version,
                                         time.time() + self.deploy_timeout_seconds, self.poll_seconds),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict:
        event = event or {}
        if event.get("status") == "ok":
            self.log.info("the model server serves version %s after %.1fs", event["version"], event["waited_seconds"])
            return event
        reason = (f"the model server still reported {event.get('last_seen')!r} after "
                  f"{self.deploy_timeout_seconds:.0f}s, expected version {event.get('version')}")
        context["ti"].xcom_push(key=FAILURE_KEY, value=reason)
        raise AirflowException(reason)


# -- the rollout: waiting for enough shadow or canary rows ------------------------------------------
class RolloutRowsTrigger(BaseTrigger):
    """Fires when the candidate's `role` rows logged since `since_epoch` reach `min_rows`, or at `deadline`.

    Counts from parquet footers (`serving.rollout.count_rows`), off the event loop.
    """

    EARLIEST_EVENT_SECONDS = waiting.EARLIEST_EVENT_SECONDS  # Airflow 3.3.2's race: see `waiting`

    def __init__(self, version: str, role: str, since_epoch: float, min_rows: int, deadline: float,
                 poll_seconds: float = 5.0):
        super().__init__()
        self.version, self.role = str(version), role
        self.since_epoch, self.min_rows = float(since_epoch), int(min_rows)
        self.deadline, self.poll_seconds = float(deadline), float(poll_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("serving.sensor.RolloutRowsTrigger",
                {"version": self.version, "role": self.role, "since_epoch": self.since_epoch,
                 "min_rows": self.min_rows, "deadline": self.deadline, "poll_seconds": self.poll_seconds})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from functools import partial

        from serving.rollout import count_rows

        got = await waiting.count_until(partial(count_rows, self.version, self.role, self.since_epoch),
                                        self.min_rows, self.deadline, self.poll_seconds, self.log,
                                        f"{self.role} rows of {self.version}", self.EARLIEST_EVENT_SECONDS)
        yield TriggerEvent({"status": got["status"], "rows": got["count"], "waited_seconds": got["waited_seconds"]})


class RolloutSensor(BaseSensorOperator):
    """Waits, in the triggerer, until a rollout stage has `plan["min_rows"]` rows or `plan["max_minutes"]` passed.

    `plan` is the stage's start task output (an XComArg); a stage that was not staged
    (direct rollout) returns at once. Time running out is not a failure: the judge then
    decides on the rows there are.
    """

    template_fields = ("plan",)

    def __init__(self, *, plan, poll_seconds: float = 5.0, max_minutes: float = 60.0, **kwargs):
        kwargs.setdefault("timeout", max_minutes * 60 + 300)  # a net under the trigger's own deadline
        super().__init__(**kwargs)
        self.plan = plan
        self.poll_seconds = poll_seconds

    def execute(self, context) -> dict | None:
        plan = self.plan
        if not plan.get("staged"):
            return {"status": "not staged", "rows": 0, "waited_seconds": 0.0}
        from serving.rollout import count_rows

        rows = count_rows(plan["version"], plan["stage"], plan["since_epoch"])
        if rows >= plan["min_rows"]:
            return self.execute_complete(context, {"status": waiting.ENOUGH, "rows": rows, "waited_seconds": 0.0})
        self.defer(
            trigger=RolloutRowsTrigger(plan["version"], plan["stage"], plan["since_epoch"], plan["min_rows"],
                                       plan["since_epoch"] + plan["max_minutes"] * 60, self.poll_seconds),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict:
        event = event or {}
        self.log.info("%s of version %s: %s rows after %.0fs (%s)", self.plan.get("stage"), self.plan.get("version"),
                      event.get("rows"), event.get("waited_seconds", 0), event.get("status"))
        return event
