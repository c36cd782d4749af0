"""Serving: a registered model version goes into service only once it has proved itself.

Runs on every `registered_model` event. It deploys the newest version the events
name (older ones are superseded), after validating it with no traffic and then, when a
production version exists (and `MLOPS_ROLLOUT=staged`), on live traffic: the server
scores it in the shadow of production, then lets it answer a canary share of flights;
each stage waits in the triggerer for enough rows or time and is judged against
production (`serving.rollout`); a failure removes the candidate and fails the run with
the reason, production having served throughout. Then it moves the
`production` alias, has the model server reload and waits in the triggerer until
the server reports the version, then smoke-tests it. If anything fails after the
alias move, `rollback` puts production back, the server follows, and the run fails
with the reason; only a clean deployment emits `deployed_model`. `rollback` is the
only leaf, so it also fails the run when an earlier step failed (say validation),
naming that step's reason and leaving production alone. A manual run can name
versions in its conf: {"versions": ["7"]}.

With `MLOPS_PROMOTION_APPROVAL=required`, `approve_promotion` (Airflow's human-in-the-loop
ApprovalOperator, `serving.approval`) sits between the canary's verdict and `promote`: it
alerts a person and waits, holding no worker slot, with the shadow's and canary's numbers in
its question, while the canary keeps answering its share. Approve promotes. Reject, or no
answer within `MLOPS_PROMOTION_APPROVAL_MINUTES`, fails that step on purpose (a skip would end
the run green with the candidate still on the server): `rollback` then removes the candidate,
tags the version and fails the run naming who rejected, production untouched and no
`deployed_model`. Nothing is asked when the canary was not staged (a first deployment,
`MLOPS_ROLLOUT=direct`). With `off` (the default) the step does not exist.
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
from serving.approval import PromotionApproval
from serving.sensor import RolloutSensor, ServerVersionSensor

cfg = settings.get()
if cfg.promotion_approval not in ("off", "required"):
    raise ValueError(f"MLOPS_PROMOTION_APPROVAL is {cfg.promotion_approval!r}: off or required")
APPROVAL = cfg.rollout == "staged" and cfg.promotion_approval == "required"
# a staged rollout may wait for its shadow and canary (and a person) on top of the deployment itself
DEADLINE_MINUTES = cfg.deploy_deadline_minutes + (
    cfg.shadow_max_minutes + cfg.canary_max_minutes if cfg.rollout == "staged" else 0) + (
    cfg.promotion_approval_minutes if APPROVAL else 0)


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
        interval=timedelta(minutes=DEADLINE_MINUTES),
        callback=AsyncCallback("alerts.deadline_missed", kwargs={
            "what": "a registered version is not serving", "dag_id": "serving",
            "minutes": DEADLINE_MINUTES}),
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
    def start_shadow(version: str, validation: dict) -> dict:
        from serving.inference_log import SHADOW
        from serving.tasks import start_stage

        return start_stage(version, SHADOW)

    @task
    @recording_failure
    def judge_shadow(plan: dict) -> dict:
        from serving.tasks import judge_stage

        return judge_stage(plan)

    @task
    @recording_failure
    def start_canary(shadow: dict) -> dict:
        from serving.inference_log import CANARY
        from serving.tasks import start_stage

        return start_stage(shadow["version"], CANARY, previous=shadow)

    @task
    @recording_failure
    def judge_canary(plan: dict) -> dict:
        from serving.tasks import judge_stage

        return judge_stage(plan)

    @task
    @recording_failure
    def promote(version: str, validation: dict, canary: dict) -> dict:
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
    def publish(promotion: dict, validation: dict, smoke: dict, shadow: dict, canary: dict,
                outlet_events=None) -> dict:
        from serving.tasks import publish

        extra = publish(promotion, validation, smoke, [shadow, canary])
        outlet_events[deployed_model].extra = extra
        return extra

    @task(trigger_rule="one_failed")
    def rollback(promote_task_id: str, rollout_task_ids: list[str], ti=None) -> None:
        from serving.tasks import rollback_failed_run

        raise AirflowFailException(rollback_failed_run(ti, promote_task_id, rollout_task_ids))

    version = choose_version()
    validation = validate(version)
    shadow = start_shadow(version, validation)
    shadow_rows = RolloutSensor(task_id="wait_for_shadow", plan=shadow, poll_seconds=cfg.rollout_poll_seconds,
                                max_minutes=cfg.shadow_max_minutes)
    shadow_verdict = judge_shadow(shadow)
    shadow_rows >> shadow_verdict
    canary = start_canary(shadow_verdict)
    canary_rows = RolloutSensor(task_id="wait_for_canary", plan=canary, poll_seconds=cfg.rollout_poll_seconds,
                                max_minutes=cfg.canary_max_minutes)
    canary_verdict = judge_canary(canary)
    canary_rows >> canary_verdict
    promotion = promote(version, validation, canary_verdict)
    rollout_steps = [shadow, shadow_rows, shadow_verdict, canary, canary_rows, canary_verdict]
    if APPROVAL:
        approval = PromotionApproval(task_id="approve_promotion", minutes=cfg.promotion_approval_minutes,
                                     verdict_task_ids=(shadow_verdict.operator.task_id,
                                                       canary_verdict.operator.task_id))
        canary_verdict >> approval >> promotion
        rollout_steps.append(approval)
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
    published = publish(promotion, validation, smoke, shadow_verdict, canary_verdict)
    [*rollout_steps, promotion, reloaded, served, smoke, published] >> rollback(
        promotion.operator.task_id, [shadow.operator.task_id, canary.operator.task_id])


serving()
