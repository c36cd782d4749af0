"""The training stage end to end on the session's Feast store and a real MLflow server.

The story of one registered model, run by run (each on one week of January, so
it stays fast):
1. the first run trains on noisy labels (45 % of the training labels flipped):
   no champion yet, so it becomes version 1; serving then promotes it;
2. the same data again: the challenger equals the champion, the gate holds;
3. clean data: the challenger beats the noisy champion on the same holdout and
   becomes version 2; serving promotes it;
4. a drift report about version 2, the same data: the challenger is only as good,
   but drift says the champion's data no longer holds: version 3.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import model_registry
import storage
from features.compute import LABEL, MODEL_FEATURES, model_frame
from features.names import FEATURE_SERVICE
from training import dataset, gate, registry, split, tasks, tracking
from training.candidates import FAMILIES
from training.metrics import scores

pytestmark = pytest.mark.integration

AS_OF = "2013-01-31T23:59:00+00:00"
EXTRA_KEYS = {"model_name", "version", "run_id", "metrics", "champion_version", "champion_metrics",
              "trigger_reason", "feature_table_events", "drift_report_events"}


def fresh(*ids: int) -> dict:
    return {"reason": "fresh_data", "drift_report_events": [],
            "feature_table_events": [{"id": i, "batch_id": f"test-2013-0{i}"} for i in ids]}


def flip_training_labels(dataset_summary: dict, share: float = 0.45) -> None:
    """Make the stored training part noisy; validation and test keep their true labels."""
    store = storage.get()
    frame = store.read_parquet(dataset_summary["url"])
    flip = (frame["part"] == split.TRAIN) & (np.random.default_rng(0).random(len(frame)) < share)
    frame.loc[flip, LABEL] = 1 - frame.loc[flip, LABEL]
    store.write_parquet(dataset_summary["url"], frame)


def drift(model_version: str) -> dict:
    report = {"id": 7, "report_path": "file:///reports/7.html", "model_version": model_version, "drift_share": 0.6}
    return {**fresh(5), "reason": "drift", "drift_report_events": [report]}


def run(key: str, trigger: dict, noisy: bool = False) -> tuple[dict, dict, dict | None]:
    """The DAG's steps in order: (training set summary, decision, registered_model extra or None)."""
    data = tasks.build_training_set(key, trigger, as_of=AS_OF)
    if noisy:
        flip_training_labels(data)
    candidates = [tasks.train_candidate(family, data, trigger) for family in FAMILIES]
    decision = tasks.gate(candidates, data, trigger)
    return data, decision, (tasks.register(decision, data, trigger) if decision["register"] else None)


def test_champion_and_challenger_over_four_runs(training_env, tmp_path, monkeypatch):
    name = training_env.model_name
    client = tracking.client()

    # 1. noisy first model, no champion: version 1, alias challenger.
    data1, d1, e1 = run("first", fresh(1, 2), noisy=True)
    assert d1["rule"] == gate.NO_CHAMPION and e1["version"] == "1"
    assert set(e1) >= EXTRA_KEYS and e1["model_name"] == name and e1["trigger_reason"] == "fresh_data"
    assert e1["feature_table_events"] == [{"id": 1, "batch_id": "test-2013-01"},
                                          {"id": 2, "batch_id": "test-2013-02"}]
    assert e1["champion_version"] is None and e1["metrics"]["roc_auc"] == d1["challenger"]["test"]["roc_auc"]
    v1 = client.get_model_version_by_alias(name, model_registry.CHALLENGER)
    assert v1.version == "1" and v1.run_id == e1["run_id"]
    assert v1.tags["feature_service"] == FEATURE_SERVICE and json.loads(v1.tags["feature_table_events"]) == [1, 2]
    assert 0 < float(v1.tags["decision_threshold"]) < 1 and v1.tags["trigger_reason"] == "fresh_data"
    assert v1.tags["test_start"] == data1["ranges"]["test_start"] and v1.tags["train_end"] < v1.tags["test_start"]
    assert json.loads(v1.tags["training_batches"]) == ["test-2013-01"] == data1["batch_ids"]
    assert "no champion" in v1.description and data1["ranges"]["train_start"] in v1.description
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id], "tags.training_run_key = 'first'")
    assert sorted(r.data.tags["candidate"] for r in runs) == sorted(FAMILIES)
    for r in runs:
        assert {"test_roc_auc", "test_pr_auc", "test_f1", "test_log_loss", "test_brier"} <= set(r.data.metrics)
        assert r.data.tags["feature_service"] == FEATURE_SERVICE and r.info.status == "FINISHED"

    reference = pd.read_parquet(
        client.download_artifacts(e1["run_id"], "reference/reference.parquet", str(tmp_path)))
    assert set(MODEL_FEATURES + [LABEL, "probability"]) <= set(reference.columns)
    assert 0 < len(reference) <= 5000 and reference["probability"].between(0, 1).all()
    # A week of flights holds too few monitoring windows (2,000 rows) to calibrate drift thresholds on:
    # none are logged, and monitoring judges every column at the settings' one threshold.
    artifacts = {a.path for a in client.list_artifacts(e1["run_id"], "reference")}
    assert artifacts == {"reference/reference.parquet"}, artifacts
    assert reference["event_timestamp"].max().isoformat() <= data1["ranges"]["train_end"]

    # Re-running steps of the same run changes nothing: same set, same candidate runs, same version.
    assert tasks.build_training_set("first", fresh(1, 2), as_of=AS_OF) == data1
    assert tasks.train_candidate(FAMILIES[0], data1, fresh(1, 2))["run_id"] in {r.info.run_id for r in runs}
    assert tasks.register(d1, data1, fresh(1, 2))["version"] == "1"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1

    client.set_registered_model_alias(name, model_registry.PRODUCTION, "1")  # what serving does

    # 2. the same (noisy) data: the challenger is the champion's twin, the gate holds.
    _, d2, e2 = run("same-data", fresh(3), noisy=True)
    assert e2 is None and d2["rule"] == gate.CHAMPION_HOLDS and not d2["register"]
    assert d2["champion_version"] == "1" and d2["improvement"] == pytest.approx(0, abs=1e-9)
    assert client.get_run(d2["challenger"]["run_id"]).data.tags["gate_decision"] == "hold"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1

    # 3. clean data: clearly better on the same holdout, version 2.
    data3, d3, e3 = run("clean-data", fresh(4))
    assert d3["rule"] == gate.BEATS_CHAMPION and e3["version"] == "2" and e3["champion_version"] == "1"
    assert d3["improvement"] > 0.03, d3["explanation"]  # six times the margin
    assert e3["champion_metrics"] == d3["champion_metrics"] and e3["champion_metrics"]["roc_auc"] < 0.6
    v2 = client.get_model_version(name, "2")
    assert v2.tags["champion_version"] == "1"
    assert float(v2.tags["champion_test_roc_auc"]) < float(v2.tags["test_roc_auc"])
    assert client.get_model_version_by_alias(name, model_registry.CHALLENGER).version == "2"

    # The holdout rebuilt from the version's tags is the one it was tested on, scored the same.
    rebuilt = dataset.holdout(v2.tags["test_start"], v2.tags["test_end"], v2.tags["data_as_of"])
    tested = storage.get().read_parquet(data3["url"]).query("part == 'test'").reset_index(drop=True)
    pd.testing.assert_frame_equal(rebuilt, tested.drop(columns="part"))
    model = registry.load_version(name, "2")
    probabilities = model.predict_proba(model_frame(rebuilt))[:, 1]
    rescored = scores(rebuilt[LABEL], probabilities, d3["challenger"]["decision_threshold"])
    assert rescored == pytest.approx(e3["metrics"])

    client.set_registered_model_alias(name, model_registry.PRODUCTION, "2")

    # A drift run trains only with enough labelled flights newer than the champion's data.
    from features.store import read_offline_table
    from support import reload_settings

    count, as_of, version = tasks.new_labels_since_champion()
    labelled = read_offline_table("flights")
    assert (version, as_of) == ("2", v2.tags["data_as_of"])
    assert count == labelled.loc[labelled["event_timestamp"] > pd.Timestamp(as_of), "flight_id"].nunique() > 0
    monkeypatch.setenv("MLOPS_RETRAIN_MIN_NEW_LABELS", str(count + 1))
    reload_settings()
    held = tasks.hold_reason(drift(model_version="2"))
    assert held.startswith(f"retraining held: {count} labelled flights departed after champion v2's data_as_of")
    assert tasks.hold_reason(fresh(9)) is None  # fresh data is never held
    monkeypatch.setenv("MLOPS_RETRAIN_MIN_NEW_LABELS", str(count))
    reload_settings()
    assert tasks.hold_reason(drift(model_version="2")) is None

    # 4. drift on the champion, same data: not worse is enough.
    _, d4, e4 = run("drift", drift(model_version="2"))
    assert d4["rule"] == gate.DRIFT_NOT_WORSE and d4["improvement"] == pytest.approx(0, abs=1e-9)
    assert (e4["version"], e4["trigger_reason"], e4["champion_version"]) == ("3", "drift", "2")
    assert e4["drift_report_events"] == [{"id": 7, "report_path": "file:///reports/7.html", "model_version": "2"}]
    assert client.get_model_version(name, "3").tags["trigger_reason"] == "drift"
