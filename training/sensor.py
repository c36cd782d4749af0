"""Waiting for labels before a drift-triggered retraining: a deferrable sensor and its trigger.

A drift report comes as soon as the served traffic has drifted; the flights that teach
the new season get their labels only as they arrive, over the following weeks.
Retraining before `retrain_min_new_labels` labelled flights departed after the
champion's data learns nothing new (`training.tasks.hold_reason`), so the run waits for
them here, in the triggerer (no worker slot held), counting the labelled flight table
every few seconds, up to `retrain_label_wait_hours`. Then it holds: the task is skipped
with the reason, a person is alerted, and monitoring's next drifted window tries again.
Runs started by fresh data never wait. Imported by the DAG file: no heavy imports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

ENOUGH, TIME = "enough", "time"


class NewLabelsTrigger(BaseTrigger):
    """Fires when `min_labels` labelled flights departed after `since` (ISO; None: any), or at `deadline`."""

    # Airflow 3.3.2 can fail a deferred task whose trigger fires within about 5 s of deferring
    # (serving.sensor.RolloutRowsTrigger has the details): an early answer waits this long.
    EARLIEST_EVENT_SECONDS = 8.0

    def __init__(self, since: str | None, min_labels: int, deadline: float, poll_seconds: float = 5.0):
        super().__init__()
        self.since, self.min_labels = since, int(min_labels)
        self.deadline, self.poll_seconds = float(deadline), float(poll_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("training.sensor.NewLabelsTrigger",
                {"since": self.since, "min_labels": self.min_labels, "deadline": self.deadline,
                 "poll_seconds": self.poll_seconds})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from training.tasks import labelled_flights_since

        started = time.time()
        while True:
            try:
                labels = await asyncio.to_thread(labelled_flights_since, self.since)
            except Exception as exc:  # a part file being replaced: count again next poll
                self.log.warning("counting the labelled flights after %s failed: %s", self.since, exc)
                labels = -1
            enough = labels >= self.min_labels
            too_soon = self.EARLIEST_EVENT_SECONDS - (time.time() - started)
            if enough and too_soon > 0 and time.time() < self.deadline:
                await asyncio.sleep(too_soon)
                continue
            if enough or time.time() >= self.deadline:
                yield TriggerEvent({"status": ENOUGH if enough else TIME, "labels": max(labels, 0),
                                    "waited_seconds": time.time() - started})
                return
            await asyncio.sleep(self.poll_seconds)


class NewLabelsSensor(BaseSensorOperator):
    """Passes at once unless `run_trigger` (read_trigger's output) is a drift run short of new labels; then
    waits in the triggerer up to `max_hours`, and skips (the run holds, alerted) if they do not come."""

    template_fields = ("run_trigger",)

    def __init__(self, *, run_trigger, poll_seconds: float = 5.0, max_hours: float = 12.0, **kwargs):
        kwargs.setdefault("timeout", max_hours * 3600 + 300)  # a net under the trigger's own deadline
        super().__init__(**kwargs)
        self.run_trigger, self.poll_seconds, self.max_hours = run_trigger, poll_seconds, max_hours

    def execute(self, context) -> dict | None:
        import settings
        from training.tasks import champion_data_as_of, hold_reason

        cfg = settings.get()
        short = hold_reason(self.run_trigger, cfg)
        if short is None:
            return {"status": ENOUGH, "waited_seconds": 0.0}
        self.log.info("%s; waiting up to %g h (MLOPS_RETRAIN_LABEL_WAIT_HOURS)", short, self.max_hours)
        _, since = champion_data_as_of(cfg)
        self.defer(trigger=NewLabelsTrigger(since, cfg.retrain_min_new_labels, time.time() + self.max_hours * 3600,
                                            self.poll_seconds),
                   method_name="execute_complete", timeout=timedelta(seconds=self.timeout))

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict:
        event = event or {}
        if event.get("status") == ENOUGH:
            self.log.info("%s labelled flights after %.0fs: training goes on", event.get("labels"),
                          event.get("waited_seconds", 0))
            return event
        from airflow.sdk.exceptions import AirflowSkipException

        from training.tasks import hold_and_alert

        held = hold_and_alert(self.run_trigger, context["run_id"])
        raise AirflowSkipException(f"{held or 'retraining held'} (waited {self.max_hours:g} h)")
