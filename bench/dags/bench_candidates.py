"""Benchmark DAG (bench/celery_bench.py only, never in dags/): four candidates trained at once.

Two training sets (two "models": the same features, two run keys) times the two candidate
families give four `train_candidate` calls, mapped, on the `training` queue like the
training DAG's. With one Celery worker (2 slots) they run two at a time; with two, four.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from training.candidates import FAMILIES

MODELS = ("model_a", "model_b")


@dag(schedule=None, start_date=datetime(2024, 1, 1), catchup=False, is_paused_upon_creation=False,
     # retries as in the training DAG: MLflow's client can fail a request at random when its
     # telemetry thread changes os.environ while requests reads it (seen once here).
     default_args={"queue": "training", "retries": 1}, tags=["bench"])
def bench_candidates():
    @task
    def build(model: str, dag_run=None) -> dict:
        from training.events import read_trigger
        from training.tasks import build_training_set

        trigger = read_trigger({}, None)
        return {"trigger": trigger, "dataset": build_training_set(f"{dag_run.run_id}-{model}", trigger)}

    @task
    def combos(built: list[dict]) -> list[dict]:
        return [{"family": f, **b} for b in built[:] for f in FAMILIES]

    @task
    def train(combo: dict) -> dict:
        from training.tasks import train_candidate

        return train_candidate(combo["family"], combo["dataset"], combo["trigger"])

    train.expand(combo=combos(build.expand(model=list(MODELS))))


bench_candidates()
