"""The training DAG: thin to parse, wired as documented, and a real run through dag.test().

dag.test() creates its own manual run; to start it "from" asset events like the
scheduler does, the events are written to the metadata DB and attached to that
run as its consumed events, which is what Airflow hands the tasks.
"""

from __future__ import annotations

import importlib
import json
from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk.definitions.mappedoperator import MappedOperator

import model_registry
import settings
from training import gate, tracking
from training.candidates import FAMILIES


def _dag():
    return importlib.import_module("dags.training").training()


def test_dag_is_wired_as_documented():
    dag = _dag()
    condition = dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"
    assert [a.name for a in condition.objects] == ["feature_table", "drift_report"]
    assert dag.max_active_runs == 1 and not dag.catchup and not dag.is_paused_upon_creation
    assert dag.start_date == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert [t.task_id for t in dag.topological_sort()] == [
        "read_trigger", "wait_for_labels", "build_training_set", "train_candidate", "gate", "register"]
    assert [o.name for o in dag.get_task("register").outlets] == ["registered_model"]
    assert {i.name for i in dag.get_task("read_trigger").inlets} == {"feature_table", "drift_report"}
    mapped = dag.get_task("train_candidate")
    assert isinstance(mapped, MappedOperator) and mapped.op_kwargs_expand_input.value == {"family": list(FAMILIES)}


class EventFeeder:
    """Makes each dag.test() run consume new asset events, as if they had triggered it.

    Set `next` to [(asset name, extra), ...] (oldest first) before calling dag.test();
    `ids` then holds the ids of the events created, in the same order.
    """

    def __init__(self, monkeypatch):
        import airflow.models.dagrun as dagrun_module

        self.next: list[tuple[str, dict]] = []
        self.ids: list[int] = []
        self._original = dagrun_module.get_or_create_dagrun
        monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", self._with_events)

    def _with_events(self, *, session, **kwargs):
        from airflow.models.asset import AssetEvent, AssetModel
        from sqlalchemy import select

        run = self._original(session=session, **kwargs)
        start = datetime.now(timezone.utc) - timedelta(minutes=len(self.next))
        created = []
        for i, (name, extra) in enumerate(self.next):
            asset_id = session.scalar(select(AssetModel.id).where(AssetModel.name == name))
            created.append(AssetEvent(
                asset_id=asset_id, extra=extra, source_dag_id="producer", source_run_id=f"{run.run_id}-{i}",
                source_task_id="emit", source_map_index=-1, timestamp=start + timedelta(minutes=i)))
        session.add_all(created)
        session.flush()
        self.ids = [e.id for e in created]
        # In reverse: the tasks must not rely on the order Airflow hands them.
        run.consumed_asset_events.extend(reversed(created))
        session.commit()
        return run


def _registered_model_events(run_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                               .where(AssetModel.name == "registered_model", AssetEvent.source_run_id == run_id))
        return [dict(e.extra) for e in rows]


def _states(run) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for ti in run.get_task_instances():
        states.setdefault(ti.task_id, []).append(str(ti.state))
    return states


@pytest.mark.integration
def test_a_run_on_batched_events_registers_and_a_run_on_the_same_data_is_skipped(
        airflow_db, training_env, monkeypatch):
    """1: two batches and a drift report, no champion: version 1 and its event.
    2: fresh data on the same one-week window: the gate holds, register is skipped, no event."""
    monkeypatch.setenv("MLOPS_TRAINING_MAX_ROWS", "2000")  # mechanics, not model quality: keep it quick
    settings.get.cache_clear()
    name = training_env.model_name
    mlflow_client = tracking.client()
    dag = _dag()
    feeder = EventFeeder(monkeypatch)
    feeder.next = [
        ("feature_table", {"batch_id": "test-2013-02", "rows_accepted": 10}),
        ("feature_table", {"batch_id": "test-2013-03", "rows_accepted": 20}),
        ("drift_report", {"report_path": "file:///r.html", "model_version": "9", "drift_share": 0.7}),
    ]

    first = dag.test()

    assert _states(first) == {"read_trigger": ["success"], "wait_for_labels": ["success"],
                              "build_training_set": ["success"], "train_candidate": ["success"] * len(FAMILIES),
                              "gate": ["success"], "register": ["success"]}
    ids = feeder.ids
    (extra,) = _registered_model_events(first.run_id)
    assert extra["model_name"] == name and extra["version"] == "1" and extra["trigger_reason"] == "drift"
    assert extra["gate_rule"] == gate.NO_CHAMPION
    assert extra["feature_table_events"] == [{"id": ids[0], "batch_id": "test-2013-02"},
                                             {"id": ids[1], "batch_id": "test-2013-03"}]
    assert [e["id"] for e in extra["drift_report_events"]] == [ids[2]]
    version = mlflow_client.get_model_version(name, "1")
    assert json.loads(version.tags["feature_table_events"]) == [ids[0], ids[1]]
    assert mlflow_client.get_model_version_by_alias(name, model_registry.CHALLENGER).version == "1"

    mlflow_client.set_registered_model_alias(name, model_registry.PRODUCTION, "1")  # what serving does
    feeder.next = [("feature_table", {"batch_id": "test-2013-03-again"})]

    second = dag.test()

    states = _states(second)
    assert states["gate"] == ["success"] and states["register"] == ["skipped"], states
    assert str(second.state) == "success" and _registered_model_events(second.run_id) == []
    assert len(mlflow_client.search_model_versions(f"name = '{name}'")) == 1

    # 3: drift on the champion with too few labelled flights newer than its data: the run waits for them,
    # deferred, then holds: nothing is trained or registered, and a person is told why.
    monkeypatch.setenv("MLOPS_RETRAIN_MIN_NEW_LABELS", "10000000")
    monkeypatch.setenv("MLOPS_RETRAIN_LABEL_WAIT_HOURS", str(2 / 3600))
    settings.get.cache_clear()
    feeder.next = [("drift_report", {"report_path": "file:///r2.html", "model_version": "1", "drift_share": 0.5})]

    third = _dag().test()

    states = _states(third)
    assert states["wait_for_labels"] == ["skipped"], states
    assert states["build_training_set"] == ["skipped"] and states["register"] == ["skipped"], states
    assert _registered_model_events(third.run_id) == []
    assert len(mlflow_client.search_model_versions(f"name = '{name}'")) == 1
    import alerts

    last = json.loads(settings.get().home.joinpath(*alerts.ALERTS_FILE).read_text().splitlines()[-1])
    assert last["kind"] == "retraining_held" and last["fields"]["run_id"] == third.run_id
    assert last["text"].startswith("retraining held:") and "need 10000000" in last["text"]
