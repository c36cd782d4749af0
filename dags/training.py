"""Training: fresh features or a drift report produce a model version, if it earns one.

Runs when `feature_table` or `drift_report` has new events, one run at a time.
It reads every triggering event (batches queue up while a run is busy); a drift run
first waits, deferred, for enough labelled flights newer than the champion's data
(`training.sensor`: retraining on what the champion already saw learns nothing) and
holds if they do not come. Then it builds a point-in-time training set from Feast,
trains each candidate family as its own mapped task, and lets the champion/challenger gate decide. Only an approved
challenger is registered (alias `challenger`) and announced as `registered_model`;
when the gate holds, the register task is skipped and no event is emitted.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

import settings
from alerts import on_task_failure
from datasets import drift_report, feature_table, registered_model
from training.candidates import FAMILIES
from training.sensor import NewLabelsSensor


@dag(
    schedule=feature_table | drift_report,
    max_active_runs=1,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    # Celery routes the training tasks to workers serving the `training` queue (LocalExecutor ignores it).
    default_args={"retries": 1, "queue": "training", "on_failure_callback": on_task_failure},
    tags=["training"],
)
def training():
    # The inlets let the task read the stored events, which carry the ids.
    @task(inlets=[feature_table, drift_report])
    def read_trigger(triggering_asset_events=None, inlet_events=None) -> dict:
        from training.events import read_trigger

        return read_trigger(triggering_asset_events, inlet_events)

    @task
    def build_training_set(trigger: dict, dag_run=None) -> dict:
        from training.tasks import build_training_set, run_key

        return build_training_set(run_key(dag_run.dag_id, dag_run.run_id), trigger)

    @task
    def train_candidate(family: str, dataset: dict, trigger: dict) -> dict:
        from training.tasks import train_candidate

        return train_candidate(family, dataset, trigger)

    @task
    def gate(candidates: list[dict], dataset: dict, trigger: dict) -> dict:
        from training.tasks import gate

        # A slice is one XCom read; iterating would probe past the last item.
        return gate(list(candidates[:]), dataset, trigger)

    @task(outlets=[registered_model])
    def register(decision: dict, dataset: dict, trigger: dict, outlet_events=None) -> dict:
        if not decision["register"]:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"the champion holds, nothing registered: {decision['explanation']}")
        from training.tasks import register

        extra = register(decision, dataset, trigger)
        outlet_events[registered_model].extra = extra
        return extra

    trigger = read_trigger()
    labels = NewLabelsSensor(task_id="wait_for_labels", run_trigger=trigger,
                             max_hours=settings.get().retrain_label_wait_hours)
    dataset = build_training_set(trigger)
    labels >> dataset
    candidates = train_candidate.partial(dataset=dataset, trigger=trigger).expand(family=list(FAMILIES))
    register(gate(candidates, dataset, trigger), dataset, trigger)


training()
