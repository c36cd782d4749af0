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

from datetime import datetime

from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

import settings
from datasets import deployed_model, registered_model
from serving.sensor import ServerVersionSensor

cfg = settings.get()


@dag(
    schedule=[registered_model],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=1,
    default_args={"retries": 0},
    tags=["serving"],
)
def serving():
    @task
    def choose_version(triggering_asset_events=None, dag_run=None, ti=None) -> str:
        from serving.deploy import choose_version, failure_reason

        events = triggering_asset_events.get(registered_model, []) if triggering_asset_events else []
        with failure_reason(ti):
            version, why = choose_version([dict(e.extra or {}) for e in events], (dag_run.conf or {}).get("versions"))
        print(why)
        if version is None:
            raise AirflowSkipException(why)
        return version

    @task
    def validate(version: str, ti=None) -> dict:
        from serving.deploy import failure_reason, validate
        from serving.validation import ValidationFailed

        with failure_reason(ti):
            try:
                return validate(version)
            except ValidationFailed as exc:
                raise AirflowFailException(f"{exc}. Production is unchanged. Measured: {exc.numbers}") from exc

    @task
    def promote(version: str, validation: dict, ti=None) -> dict:
        from serving.deploy import failure_reason, promote

        with failure_reason(ti):
            return promote(version)

    @task
    def reload_server(promotion: dict, ti=None) -> dict:
        from serving.deploy import failure_reason, reload_server

        with failure_reason(ti):
            return reload_server(promotion["version"])

    @task
    def smoke_test(promotion: dict, ti=None) -> dict:
        from serving.deploy import failure_reason, smoke_test

        with failure_reason(ti):
            return smoke_test(promotion["version"])

    @task(outlets=[deployed_model])
    def publish(promotion: dict, validation: dict, smoke: dict, outlet_events=None, ti=None) -> dict:
        from serving.deploy import deployed_extra, failure_reason

        with failure_reason(ti):
            extra = deployed_extra(promotion, validation, smoke)
            outlet_events[deployed_model].extra = extra
            return extra

    @task(trigger_rule="one_failed")
    def rollback(ti=None) -> None:
        from serving.deploy import rollback_failed_run

        raise AirflowFailException(rollback_failed_run(ti))

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
    [promotion, reloaded, served, smoke, published] >> rollback()


serving()
