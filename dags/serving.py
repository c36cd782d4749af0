"""Serving: a registered model version goes into service only once it has proved itself.

Runs on every `registered_model` event. It deploys the newest version the events
name (older ones are superseded), after validating it with no traffic. It moves the
`production` alias, has the model server reload and waits in the triggerer until
the server reports the version, then smoke-tests it. If anything fails after the
alias move, `rollback` puts production back, the server follows, and the run fails
with the reason; only a clean deployment emits `deployed_model`. `rollback` is the
only leaf, so it also fails the run when an earlier step failed (say validation),
naming that step's reason and leaving production alone. A manual run can name
versions in its conf: {"versions": ["7"]}.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

import settings
from alerts import on_task_failure
from datasets import deployed_model, registered_model
from serving.failures import recording_failure
from serving.sensor import ServerVersionSensor

cfg = settings.get()


@dag(
    schedule=[registered_model],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=1,
    default_args={"retries": 0, "on_failure_callback": on_task_failure},
    # A registered version not serving in time reaches a person even if no task failed (a stuck sensor).
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=cfg.deploy_deadline_minutes),
        callback=AsyncCallback("alerts.deadline_missed", kwargs={
            "what": "a registered version is not serving", "dag_id": "serving",
            "minutes": cfg.deploy_deadline_minutes}),
    ),
    tags=["serving"],
)
def serving():
    @task
    @recording_failure
    def choose_version(triggering_asset_events=None, dag_run=None) -> str:
        from serving.tasks import choose_version

        events = triggering_asset_events.get(registered_model, []) if triggering_asset_events else []
        version, why = choose_version([dict(e.extra or {}) for e in events], (dag_run.conf or {}).get("versions"))
        print(why)
        if version is None:
            raise AirflowSkipException(why)
        return version

    @task
    @recording_failure
    def validate(version: str) -> dict:
        from serving.tasks import validate

        return validate(version)

    @task
    @recording_failure
    def promote(version: str, validation: dict) -> dict:
        from serving.tasks import promote

        return promote(version)

    @task
    @recording_failure
    def reload_server(promotion: dict) -> dict:
        from serving.tasks import reload_server

        return reload_server(promotion["version"])

    @task
    @recording_failure
    def smoke_test(promotion: dict) -> dict:
        from serving.tasks import smoke_test

        return smoke_test(promotion["version"])

    @task(outlets=[deployed_model])
    @recording_failure
    def publish(promotion: dict, validation: dict, smoke: dict, outlet_events=None) -> dict:
        from serving.tasks import publish

        extra = publish(promotion, validation, smoke)
        outlet_events[deployed_model].extra = extra
        return extra

    @task(trigger_rule="one_failed")
    def rollback(promote_task_id: str, ti=None) -> None:
        from serving.tasks import rollback_failed_run

        raise AirflowFailException(rollback_failed_run(ti, promote_task_id))

    version = choose_version()
    validation = validate(version)
    promotion = promote(version, validation)
    reloaded = reload_server(promotion)
    served = ServerVersionSensor(
        task_id="wait_for_server",
        promotion=promotion,
        server_url=cfg.model_server_url,
        deploy_timeout_seconds=cfg.deploy_timeout_seconds,
    )
    reloaded >> served
    smoke = smoke_test(promotion)
    served >> smoke
    published = publish(promotion, validation, smoke)
    [promotion, reloaded, served, smoke, published] >> rollback(promotion.operator.task_id)


serving()
