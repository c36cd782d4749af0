"""The monitoring DAGs: light to parse, and `drift_report` only when the policy says retrain (dag.test)."""

from __future__ import annotations

import importlib
from datetime import datetime, timezone

import pytest

from monitoring import state

from monitoring_helpers import reference_sample, register_version, write_log

def _dags():
    module = importlib.reload(importlib.import_module("dags.monitoring"))  # reads the test's settings
    return module.monitoring(), module.monitoring_baseline()


def test_the_two_dags_are_wired_as_documented(monitor_env):
    monitoring, baseline = _dags()
    assert type(monitoring.timetable).__name__ == "ContinuousTimetable" and monitoring.max_active_runs == 1
    assert not monitoring.is_paused_upon_creation and not monitoring.catchup
    assert [t.task_id for t in monitoring.topological_sort()] == [
        "wait_for_traffic", "build_report", "judge_window", "emit_drift_report"]
    assert [o.name for o in monitoring.get_task("emit_drift_report").outlets] == ["drift_report"]
    sensor_kwargs = monitoring.get_task("wait_for_traffic").start_trigger_args.trigger_kwargs
    assert sensor_kwargs["min_rows"] == 1000 and sensor_kwargs["model_name"] == monitor_env.model_name
    assert sensor_kwargs["span_days"] == monitor_env.monitor_window_days == 7.0
    assert [a.name for a in baseline.timetable.asset_condition.objects] == ["deployed_model"]


def _drift_events(run_id: str) -> list[dict]:
    from sqlalchemy import select

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "drift_report", AssetEvent.source_run_id == run_id)
        ).all()
        return [dict(e.extra) for e in rows]


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


@pytest.mark.integration
def test_monitoring_emits_drift_report_only_when_the_policy_says_retrain(airflow_db, monitor_env, mlflow_uri,
                                                                         served):
    name = monitor_env.model_name
    version = register_version(name, reference_sample(served["reference"]), {"test_roc_auc": 0.74})
    monitoring, _ = _dags()

    july = write_log(served["july"].head(1200), name, version, per_file=400)
    first = monitoring.test()
    assert _states(first) == {"wait_for_traffic": "success", "build_report": "success", "judge_window": "success",
                              "emit_drift_report": "success"}
    (extra,) = _drift_events(first.run_id)
    assert extra["model_version"] == version and extra["drift_share"] >= monitor_env.drift_share_threshold and extra["reason"] == "drift"
    assert {"temp", "dewp"} <= set(extra["drifted_columns"])
    assert extra["report_path"].startswith(monitor_env.storage_url + f"/reports/{name}/v{version}/")
    # 1,200 July flights span twelve days of departures, fewer than 1,000 in the first seven: the window
    # stretches to its 1,000th departure, and the last file's 200 later flights carry over.
    assert extra["window"]["rows"] == 1000 and extra["quality"]["labelled_rows"] == 0
    assert extra["window"]["pending_rows"] == 200
    names = [u.rsplit("/", 1)[1] for u in july]
    assert state.consumed_files(state.load(name), version) == set(names[:2])
    assert list(state.carried_files(state.load(name), version)) == [names[2]]

    write_log(served["july"].iloc[1200:2400], name, version, per_file=400)  # the same drift goes on
    second = monitoring.test()
    assert _states(second)["emit_drift_report"] == "skipped" and _drift_events(second.run_id) == []
    windows = state.version_state(state.load(name), version)["windows"]
    assert [w["decision"]["reason"] for w in windows] == ["retrain", "already_triggered"]


def test_baseline_task_turns_deployed_model_events_into_baselines(monitor_env):
    """The task body as the scheduler calls it, with `deployed_model` events oldest first."""
    from types import SimpleNamespace

    from datasets import deployed_model

    _, baseline_dag = _dags()
    record = baseline_dag.get_task("record_baseline").python_callable
    first, second = (datetime(2026, 7, 1, h, tzinfo=timezone.utc) for h in (12, 13))
    events = [SimpleNamespace(extra={"model_name": monitor_env.model_name, "version": "5", "previous_version": "4"},
                              timestamp=first, source_run_id="serving-run-1"),
              SimpleNamespace(extra={"model_name": monitor_env.model_name, "version": "6", "previous_version": "5"},
                              timestamp=second, source_run_id="serving-run-2")]
    recorded = record(triggering_asset_events={deployed_model: events})
    assert [(b["version"], b["previous_version"]) for b in recorded] == [("5", "4"), ("6", "5")]
    assert state.load_baseline(monitor_env.model_name, "6")["deployed_at"] == second.isoformat()
    assert state.load_baseline(monitor_env.model_name, "6")["source_run_id"] == "serving-run-2"
