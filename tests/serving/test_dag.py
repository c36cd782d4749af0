"""The serving DAG: its wiring, and whole runs with dag.test() on real MLflow and a real model server."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_helpers import LiveServer, free_port, unique_name

import model_registry

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "serving.py"


def load_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["serving"]


def test_the_dag_is_wired_as_the_contract_says(airflow_db):
    from airflow.sdk import Asset

    dag = load_dag()
    assert dag.schedule == [Asset(name="registered_model", uri=dag.schedule[0].uri, group="models")]
    assert (dag.catchup, dag.max_active_runs, dag.is_paused_upon_creation) == (False, 1, False)
    assert [o.name for o in dag.get_task("publish").outlets] == ["deployed_model"]
    rollback = dag.get_task("rollback")
    assert rollback.trigger_rule == "one_failed"
    rollout = {"start_shadow", "wait_for_shadow", "judge_shadow", "start_canary", "wait_for_canary", "judge_canary"}
    assert rollback.upstream_task_ids == rollout | {"promote", "reload_server", "wait_for_server", "smoke_test",
                                                    "publish"}
    assert dag.get_task("wait_for_server").__class__.__name__ == "ServerVersionSensor"
    assert dag.get_task("validate").downstream_task_ids == {"start_shadow", "promote", "publish"}
    # live traffic judges the version before the alias moves: shadow, then canary, then promote
    assert dag.get_task("wait_for_shadow").__class__.__name__ == "RolloutSensor"
    assert dag.get_task("start_shadow").downstream_task_ids == {"wait_for_shadow", "judge_shadow", "rollback"}
    assert dag.get_task("judge_shadow").downstream_task_ids == {"start_canary", "publish", "rollback"}
    assert dag.get_task("judge_canary").downstream_task_ids == {"promote", "publish", "rollback"}


@pytest.fixture(scope="module")
def versions(register) -> dict:
    name = unique_name("dag")
    return {"name": name, "v1": register(name, "good"), "v2": register(name, "other"),
            "broken": register(name, "raising_pyfunc")}


@pytest.fixture
def stack(airflow_db, serving_env, versions, mlflow_server):
    """Production = v1 on a live model server; settings for the DAG. Yields the settings."""
    mlflow_client = model_registry.client(mlflow_server)
    model_registry.point_alias(mlflow_client, versions["name"], model_registry.PREVIOUS, None)
    model_registry.point_alias(mlflow_client, versions["name"], model_registry.PRODUCTION, versions["v1"])
    # These runs test the deployment itself (MLOPS_ROLLOUT=direct); test_rollout_dag.py runs the staged rollout.
    cfg = serving_env(versions["name"], MLOPS_MODEL_SERVER_URL=f"http://127.0.0.1:{free_port()}",
                      MLOPS_DEPLOY_TIMEOUT_SECONDS="30", MLOPS_ROLLOUT="direct")
    with LiveServer(int(cfg.model_server_url.rsplit(":", 1)[1])):
        yield cfg


def run(versions_to_deploy: list[str]):
    """One run of the DAG: (run state, {task_id: state}, deployed_model events it emitted, run id)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    def events_so_far(session):
        return session.scalar(select(func.count()).select_from(AssetEvent)
                              .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                              .where(AssetModel.name == "deployed_model"))

    dag = load_dag()
    # Airflow 3.3's dag.test() runs the DAG as parsed, whose `deadline` holds the alert definitions
    # where DagRun.update_state expects the ids of their stored rows ("'dict' object has no attribute
    # 'hex'" once the run succeeds). The scheduler runs the serialized DAG, whose deadline works: the
    # loop tests deploy through it, and tests/test_alerts.py checks the deadline's definition.
    dag.deadline = None
    with create_session() as session:
        before = events_so_far(session)
    dag_run = dag.test(run_conf={"versions": versions_to_deploy})
    with create_session() as session:
        emitted = session.scalars(select(AssetEvent).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                                  .where(AssetModel.name == "deployed_model")
                                  .order_by(AssetEvent.id).offset(before)).all()
        states = {ti.task_id: ti.state for ti in dag_run.get_task_instances(session=session)}
        return dag_run.state, states, [dict(e.extra) for e in emitted], dag_run.run_id


def failure_reason(run_id: str, task_id: str) -> str:
    """The reason a task recorded (XCom `failure`) before failing."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(select(XComModel.value).where(
            XComModel.dag_id == "serving", XComModel.run_id == run_id, XComModel.task_id == task_id,
            XComModel.key == "failure"))
    return str(value)


def server_version(cfg):
    from serving.client import ServerClient

    return ServerClient(cfg.model_server_url).version()


def test_a_good_version_is_deployed_and_announced(stack, versions, mlflow_server):
    state, tasks, events, _ = run([versions["v2"]])

    assert state == "success", tasks
    assert tasks["rollback"] == "skipped"
    assert server_version(stack) == versions["v2"]
    mlflow_client = model_registry.client(mlflow_server)
    assert model_registry.alias_version(mlflow_client.tracking_uri, versions["name"], model_registry.PRODUCTION) == versions["v2"]
    assert model_registry.alias_version(mlflow_client.tracking_uri, versions["name"], model_registry.PREVIOUS) == versions["v1"]
    [extra] = events
    assert (extra["model_name"], extra["version"], extra["previous_version"]) == (
        versions["name"], versions["v2"], versions["v1"])
    assert extra["validation"]["comparison"]["roc_auc"]["gap"] < 1e-9
    assert extra["smoke"]["requests"] > 1


def test_a_broken_version_leaves_production_unchanged_and_the_run_says_why(stack, versions, mlflow_server):
    state, tasks, events, run_id = run([versions["broken"]])

    assert state == "failed"
    assert tasks["validate"] == "failed" and tasks["promote"] == "upstream_failed"
    assert tasks["rollback"] == "failed"  # the only leaf: fails the run, naming validate's reason
    assert "does not load" in failure_reason(run_id, "validate")
    assert events == []
    # A person is told, through the failure callback (no webhook set here: the alerts file).
    import json

    import alerts
    import settings

    sent = [json.loads(line) for line in settings.get().home.joinpath(*alerts.ALERTS_FILE).read_text().splitlines()]
    mine = [a for a in sent if a["fields"].get("run_id") == run_id]
    assert {a["title"] for a in mine} >= {"serving.validate failed", "serving.rollback failed"}, mine
    assert all(a["kind"] == "task_failed" for a in mine)
    assert any("does not load" in a["text"] for a in mine if a["title"] == "serving.rollback failed")
    assert model_registry.alias_version(mlflow_server, versions["name"], model_registry.PRODUCTION) == versions["v1"]
    assert server_version(stack) == versions["v1"]


def test_a_failure_after_the_alias_move_rolls_back_and_fails_the_run(stack, versions, mlflow_server, monkeypatch):
    from serving import tasks as deploy_tasks

    def failing_smoke(version, cfg=None, payloads=None):
        raise deploy_tasks.DeployFailed("forced smoke failure")

    monkeypatch.setattr(deploy_tasks, "smoke_test", failing_smoke)
    state, tasks, events, _ = run([versions["v2"]])

    assert state == "failed"
    assert tasks["smoke_test"] == "failed" and tasks["rollback"] == "failed"  # failed loudly, after restoring
    assert events == []
    mlflow_client = model_registry.client(mlflow_server)
    assert model_registry.alias_version(mlflow_client.tracking_uri, versions["name"], model_registry.PRODUCTION) == versions["v1"]
    assert server_version(stack) == versions["v1"]
    reason = model_registry.version_tags(mlflow_client, versions["name"], versions["v2"])["rollback_reason"]
    assert reason == "smoke_test: DeployFailed: forced smoke failure"
