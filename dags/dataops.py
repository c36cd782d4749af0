"""DataOps: files dropped in the landing zone become fresh features in Feast.

Runs continuously, one run at a time. Each run waits in the triggerer for
complete files in `landing/`, validates them (bad files and rows go to
quarantine with a reason), writes features to the offline store, materializes
them online and emits `feature_table` whose extra is `datasets.feature_table_extra`
of the batch (`features.tasks.publish`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

import settings
from alerts import on_task_failure
from datasets import feature_table
from features.landing import LandingZoneSensor

cfg = settings.get()


@dag(
    schedule="@continuous",
    max_active_runs=1,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10), "on_failure_callback": on_task_failure},
    tags=["dataops"],
)
def dataops():
    landed = LandingZoneSensor(
        task_id="wait_for_landing_files",
        landing_url=f"{cfg.storage_url}/landing",
        poll_seconds=cfg.landing_poll_seconds,
        stable_seconds=cfg.landing_stable_seconds,
    )

    @task
    def validate_batch(files: list[str], run_id=None, dag_run=None) -> dict:
        from features.ingest import Batch, batch_id_for
        from features.ingest_deadline import mark_pending
        from features.tasks import alert_quarantined

        batch = Batch(batch_id_for(run_id, dag_run.run_after)).ingest(files)
        mark_pending(batch, files)  # on its way to feature_table: the dataops_deadline DAG watches it
        alert_quarantined(batch)
        return batch

    @task
    def write_features(batch: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        if not batch["rows_accepted"]:
            raise AirflowSkipException("nothing accepted in this batch: no feature update, no event")
        from features.tasks import write_features

        return write_features(batch)

    @task(outlets=[feature_table])
    def materialize_online(batch: dict, written: dict, outlet_events=None) -> None:
        from features.tasks import publish

        outlet_events[feature_table].extra = publish(batch, written)

    batch = validate_batch(landed.output)
    materialize_online(batch, write_features(batch))


dataops()
