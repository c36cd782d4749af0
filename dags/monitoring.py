"""Monitoring: compare what the model server serves with what the deployed model was trained on.

`drift_report` is emitted only when the drift policy says retrain; training consumes it.

Schedule. A DAG cannot be both `@continuous` and asset-scheduled in Airflow 3,
so this file holds two DAGs:

- `monitoring` runs continuously, one run at a time. Its first task is a
  deferrable sensor that waits in the triggerer. Each poll (every
  `monitor_poll_seconds`) asks MLflow for the version behind the `production`
  alias and reads the departures of that version's inference log rows not yet
  judged. Once they span `monitor_window_days` of departures with at least
  `monitor_min_rows` rows (`monitoring/windows.py`), it fires with the window; the
  run builds the Evidently report of exactly those rows (saved under
  `reports/<model>/v<version>/`), the policy judges it (decision and numbers in
  the task log), and `emit_drift_report` sends the event or is skipped. Then
  the next run starts waiting again.
- `monitoring_baseline` runs on `deployed_model` and records each deployed
  version's fresh baseline: its deployment time. Log files written before it
  (validation and smoke requests) are not counted as traffic. Because the log is
  partitioned by version and the sensor follows the `production` alias, a new
  version is watched from zero rows even before this DAG has run.

Loop guard: at most one drift-triggered retraining per deployed version and drift
episode, and none during the model-wide cool-down (see `monitoring/policy.py`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

import settings
from alerts import on_task_failure
from datasets import deployed_model, drift_report
from monitoring.sensor import NewTrafficSensor

cfg = settings.get()


@dag(
    schedule="@continuous",
    max_active_runs=1,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30), "on_failure_callback": on_task_failure},
    tags=["monitoring"],
)
def monitoring():
    traffic = NewTrafficSensor(
        task_id="wait_for_traffic",
        model_name=cfg.model_name,
        tracking_uri=cfg.mlflow_tracking_uri,
        min_rows=cfg.monitor_min_rows,
        span_days=cfg.monitor_window_days,
        poll_seconds=cfg.monitor_poll_seconds,
    )

    @task
    def build_report(found: dict, ti=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from monitoring.tasks import report_window
        from monitoring.report import ReferenceMissing

        try:
            return report_window(found, last_attempt=ti.try_number > ti.max_tries)
        except ReferenceMissing as exc:
            raise AirflowFailException(str(exc)) from exc  # retrying cannot create the artifact

    @task
    def judge_window(summary: dict) -> dict:
        from monitoring.tasks import judge_window

        return judge_window(summary)

    @task(outlets=[drift_report])
    def emit_drift_report(summary: dict, decision: dict, outlet_events=None) -> None:
        from airflow.sdk.exceptions import AirflowSkipException

        if not decision["retrain"]:
            raise AirflowSkipException(f"policy says no retrain ({decision['reason']}): no drift_report event")
        from monitoring.tasks import drift_report_extra

        outlet_events[drift_report].extra = drift_report_extra(summary, decision)

    summary = build_report(traffic.output)
    emit_drift_report(summary, judge_window(summary))


@dag(
    schedule=[deployed_model],
    max_active_runs=1,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    default_args={"on_failure_callback": on_task_failure},
    tags=["monitoring"],
)
def monitoring_baseline():
    @task
    def record_baseline(triggering_asset_events=None) -> list[dict]:
        from monitoring.tasks import record_baselines

        events = [
            {"extra": dict(e.extra or {}), "timestamp": e.timestamp, "source_run_id": e.source_run_id}
            for e in triggering_asset_events[deployed_model]
        ]
        return record_baselines(events)

    record_baseline()


monitoring()
monitoring_baseline()
