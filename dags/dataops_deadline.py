"""The ingest deadline: a file dropped in landing must reach `feature_table` within MLOPS_INGEST_DEADLINE_MINUTES.

Not an Airflow Deadline Alert on the dataops DAG: that DAG is `@continuous`, each run
is queued when the previous one ends and then waits in the landing sensor for files,
so a run's queued time is when the waiting began, not when a file was dropped; and a
file dropped while a dataops run is busy or stuck is seen by no sensor until that run
ends. This DAG's own deferrable sensor measures from when each file was first seen in
landing to its batch's features going online, and alerts (`deadline_missed`) once per
late file, saying where it is stuck (`features.ingest_deadline`). Each run ends after
alerting (or after hours of nothing late) and the next goes on watching.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag

import settings
from alerts import on_task_failure
from features.ingest_deadline import IngestDeadlineSensor

cfg = settings.get()


@dag(
    schedule="@continuous" if cfg.ingest_deadline_minutes > 0 else None,
    max_active_runs=1,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10), "on_failure_callback": on_task_failure},
    tags=["dataops"],
)
def dataops_deadline():
    IngestDeadlineSensor(
        task_id="wait_for_late_files",
        landing_url=f"{cfg.storage_url}/landing",
        minutes=cfg.ingest_deadline_minutes,
    )


dataops_deadline()
