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

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

import waiting

ENOUGH, TIME = waiting.ENOUGH, waiting.TIME


class NewLabelsTrigger(BaseTrigger):
    """Fires when `min_labels` labelled flights departed after `since` (ISO; None: any), or at `deadline`."""

    EARLIEST_EVENT_SECONDS = waiting.EARLIEST_EVENT_SECONDS  # Airflow 3.3.2's race: see `waiting`

    def __init__(self, since: str | None, min_labels: int, deadline: float, poll_seconds: float = 5.0):
        super().__init__()
        self.since, self.min_labels = since, int(min_labels)
        self.deadline, self.poll_seconds = float(deadline), float(poll_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("training.sensor.NewLabelsTrigger",
                {"since": self.since, "min_labels": self.min_labels, "deadline": self.deadline,
                 "poll_seconds": self.poll_seconds})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from functools import partial

        from training.tasks import labelled_flights_since

        got = await waiting.count_until(partial(labelled_flights_since, self.since), self.min_labels, self.deadline,
                                        self.poll_seconds, self.log, f"the labelled flights after {self.since}",
                                        self.EARLIEST_EVENT_SECONDS)
        yield TriggerEvent({"status": got["status"], "labels": got["count"], "waited_seconds": got["waited_seconds"]})


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
        from training import events
        from training.tasks import hold_reason, new_labels_since_champion

        if self.run_trigger["reason"] != events.DRIFT:
            return {"status": ENOUGH, "waited_seconds": 0.0}
        cfg = settings.get()
        measured = new_labels_since_champion(cfg)
        short = hold_reason(self.run_trigger, cfg, measured)
        if short is None:
            return {"status": ENOUGH, "waited_seconds": 0.0}
        self.log.info("%s; waiting up to %g h (MLOPS_RETRAIN_LABEL_WAIT_HOURS)", short, self.max_hours)
        since = measured[1]
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
