"""Event extras are the API between the DAGs: every consumer reads what the producers' builders make.

Each extra here comes from its builder in `datasets.py` (the producing tasks emit
exactly that, checked by `datasets.check_extra`; tests of each stage check a real
extra of its producing task). Each consumer is then run on it, so a key renamed or
removed in `datasets.py` fails here, naming the consumer that disagrees.
"""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

import datasets
from datasets import ExtraMismatch, check_extra

T0 = datetime(2013, 3, 1, 12, tzinfo=timezone.utc)

BATCH = {  # what features.ingest summarizes for a batch (more keys than the extra keeps)
    "batch_id": "20130301T120000-abc123", "content_hash": "c" * 64,
    "files": [
        {"name": "flights_2013-02.csv", "kind": "flights", "sha256": "a" * 64, "status": "accepted", "rows_in": 10,
         "rows_accepted": 9, "rows_quarantined": 1, "move_to": "file:///s/processed/x", "staged": "file:///s/st"},
        {"name": "junk.csv", "kind": None, "sha256": "b" * 64, "status": "quarantined", "rows_in": 0,
         "rows_accepted": 0, "rows_quarantined": 0, "move_to": "file:///s/quarantine/junk.csv", "reason": "?"},
    ],
    "rows_in": 10, "rows_accepted": 9, "rows_quarantined": 1,
    "event_time_min": "2013-02-01T05:00:00+00:00", "event_time_max": "2013-02-28T23:00:00+00:00",
}


def feature_table_extra():
    return check_extra(datasets.feature_table, datasets.feature_table_extra(BATCH))


def drift_report_extra(**changes):
    """A drift_report extra as monitoring builds it (for version 3 unless `changes` say otherwise)."""
    return check_extra(datasets.drift_report, datasets.drift_report_extra(**{
        "report_path": "file:///r/1.html", "json_path": "file:///r/1.json", "drift_share": 0.25,
        "drifted_columns": ["temp", "dewp"], "prediction_drift": 0.3, "quality": {"metric": "roc_auc", "value": None},
        "model_name": "flight_delay", "model_version": "3",
        "window": {"id": "w1", "start": "2013-07-01T00:00:00+00:00", "end": "2013-07-02T00:00:00+00:00", "rows": 2000,
                   "departures_from": "2013-07-01T05:00:00.000000Z", "departures_to": "2013-07-08T05:00:00.000000Z",
                   "pending_rows": 120, "files": ["a.parquet"]},
        "reason": "drift", **changes,
    }))


def registered_model_extra(feature_table_events, drift_report_events, **changes):
    """A registered_model extra as training builds it (version 4 over champion 3 unless `changes` say otherwise)."""
    return check_extra(datasets.registered_model, datasets.registered_model_extra(**{
        "model_name": "flight_delay", "version": "4", "run_id": "r" * 32, "metrics": {"roc_auc": 0.71, "log_loss": 0.5},
        "champion_version": "3", "champion_metrics": {"roc_auc": 0.70, "log_loss": 0.52}, "trigger_reason": "drift",
        "gate_rule": "drift_and_not_worse", "feature_table_events": feature_table_events,
        "drift_report_events": drift_report_events, **changes,
    }))


def deployed_model_extra(**changes):
    """A deployed_model extra as serving builds it (version 4 after 3 unless `changes` say otherwise)."""
    return check_extra(datasets.deployed_model, datasets.deployed_model_extra(**{
        "model_name": "flight_delay", "version": "4", "previous_version": "3", "validation": {"holdout_rows": 10},
        "smoke": {"requests": 6}, **changes}))


def event(asset, extra, event_id):
    return SimpleNamespace(id=event_id, timestamp=T0, extra=extra, source_dag_id=f"{asset.name}_producer",
                           source_run_id="run", source_task_id="task", asset=asset)


# -- the type check itself -------------------------------------------------------------------
def test_the_builders_make_what_the_types_declare():
    for extra, kind in ((feature_table_extra(), datasets.FeatureTableExtra),
                        (drift_report_extra(), datasets.DriftReportExtra),
                        (deployed_model_extra(), datasets.DeployedModelExtra)):
        assert set(extra) == set(kind.__annotations__)
    assert set(feature_table_extra()["files"][0]) == set(datasets.LandingFileRecord.__annotations__)


def test_a_wrong_extra_is_refused_with_every_problem_named():
    extra = dict(feature_table_extra())
    del extra["batch_id"]
    extra["rows_in"] = "10"
    extra["surprise"] = 1
    with pytest.raises(ExtraMismatch) as caught:
        check_extra(datasets.feature_table, extra)
    message = str(caught.value)
    assert "lacks 'batch_id'" in message and "rows_in is str" in message and "undeclared key 'surprise'" in message
    with pytest.raises(ExtraMismatch, match=r"files\[0\]\.rows_in"):
        check_extra("feature_table", {**feature_table_extra(),
                                      "files": [{**feature_table_extra()["files"][0], "rows_in": None}]})


# -- every consumer on what the producers make ---------------------------------------------------
def test_training_keeps_the_lineage_keys_of_both_extras():
    from training import events, gate

    assert set(events.FEATURE_TABLE_KEYS) <= set(datasets.FeatureTableExtra.__annotations__)
    assert set(events.DRIFT_REPORT_KEYS) <= set(datasets.DriftReportExtra.__annotations__)
    batch = events.event_record(event(datasets.feature_table, feature_table_extra(), 7), 7, events.FEATURE_TABLE_KEYS)
    drift = events.event_record(event(datasets.drift_report, drift_report_extra(), 8), 8, events.DRIFT_REPORT_KEYS)
    assert all(batch[k] is not None for k in events.FEATURE_TABLE_KEYS)
    assert all(drift[k] is not None for k in events.DRIFT_REPORT_KEYS)
    trigger = {"reason": events.DRIFT, "feature_table_events": [batch], "drift_report_events": [drift]}
    assert gate.drift_concerns_champion(trigger["drift_report_events"], "3")
    extra = registered_model_extra(**events.lineage_ids(trigger))
    assert extra["feature_table_events"] == [{"id": 7, "batch_id": BATCH["batch_id"]}]
    assert extra["drift_report_events"][0]["report_path"] == "file:///r/1.html"


def test_serving_deploys_the_version_a_registered_model_event_names():
    from serving.tasks import versions_named

    extra = registered_model_extra([], [])
    assert versions_named([extra], None, "flight_delay") == ["4"]


def test_monitoring_starts_a_baseline_from_a_deployed_model_event(home):
    from monitoring.tasks import record_baselines

    [baseline] = record_baselines([{"extra": deployed_model_extra(), "timestamp": T0, "source_run_id": "r"}])
    assert (baseline["version"], baseline["previous_version"]) == ("4", "3")


def test_the_demo_describes_every_hop_from_its_extra():
    from ops import demo

    assert BATCH["batch_id"] in demo.describe_feature_table(feature_table_extra())
    assert demo.flight_files_accepted(feature_table_extra()) == 1
    assert "v4 (drift)" in demo.describe_registered(registered_model_extra([], []))
    assert demo.describe_deployed(deployed_model_extra()) == "v4 serving (previous v3)"
    assert "v3" in demo.describe_drift(drift_report_extra())


def test_lineage_walks_from_the_production_version_back_to_the_landing_files(monkeypatch):
    from ops import lineage

    stored = {
        "feature_table": [{"id": 7, "timestamp": "t", "extra": feature_table_extra()}],
        "drift_report": [{"id": 8, "timestamp": "t", "extra": drift_report_extra()}],
        "registered_model": [{"id": 9, "timestamp": "t", "extra": registered_model_extra(
            [{"id": 7, "batch_id": BATCH["batch_id"]}],
            [{"id": 8, "report_path": "file:///r/1.html", "model_version": "3"}])}],
        "deployed_model": [{"id": 10, "timestamp": "t", "extra": deployed_model_extra()}],
    }
    client = SimpleNamespace(asset_events=lambda name, limit=100: stored[name])
    monkeypatch.setattr(lineage, "production_version", lambda uri, name: "4")
    cfg = SimpleNamespace(mlflow_tracking_uri="http://mlflow", model_name="flight_delay")

    text = "\n".join(lineage.chain(client, cfg, batches_of=lambda cfg, version: []))

    assert "previous v3" in text and "trigger drift" in text and "share 0.25 on v3" in text
    assert f"batch {BATCH['batch_id']}, 9 rows" in text and "(triggered the run)" in text
    assert "flights_2013-02.csv (accepted" in text and "junk.csv (quarantined" in text


def test_lineage_follows_a_drift_triggered_version_to_the_batches_it_trained_on(monkeypatch):
    """A drift-triggered run names no feature_table event; the version's training batches lead to the files."""
    from ops import lineage

    stored = {
        "feature_table": [{"id": 7, "timestamp": "t", "extra": feature_table_extra()}],
        "drift_report": [{"id": 8, "timestamp": "t", "extra": drift_report_extra()}],
        "registered_model": [{"id": 9, "timestamp": "t", "extra": registered_model_extra(
            [], [{"id": 8, "report_path": "file:///r/1.html", "model_version": "3"}])}],
        "deployed_model": [{"id": 10, "timestamp": "t", "extra": deployed_model_extra()}],
    }
    client = SimpleNamespace(asset_events=lambda name, limit=100: stored[name])
    monkeypatch.setattr(lineage, "production_version", lambda uri, name: "4")
    cfg = SimpleNamespace(mlflow_tracking_uri="http://mlflow", model_name="flight_delay")

    text = "\n".join(lineage.chain(client, cfg, batches_of=lambda cfg, version: [BATCH["batch_id"]]))

    assert f"batch {BATCH['batch_id']}, 9 rows" in text and "(in the training set)" in text
    assert "flights_2013-02.csv (accepted" in text


def test_the_demo_says_each_rollout_stage_and_a_rollback_in_one_line():
    from ops import demo

    shadow = {"rows": 204, "errors": 0, "latency_ratio": 1.2476, "agreement": 0.7746, "score_psi": 0.1973,
              "labelled_rows": {"candidate": 174, "production": 174},
              "quality": {"roc_auc": {"improvement": 0.0211, "interval": [0.001, 0.04]},
                          "f1": {"improvement": -0.0698, "interval": [-0.15, 0.01]}}}
    [line] = demo.describe_rollout({"rollout": {"shadow": {"verdict": "shadow of version 2 passed", "numbers": shadow}}})
    assert line == ("shadow passed: 204 rows, 0 errors, latency 1.25x production's, agreement 0.775, score PSI 0.197, "
                    "vs production on 174 labelled: roc_auc +0.021 [+0.001, +0.040], f1 -0.070 [-0.150, +0.010]")
    reason = f"judge_shadow: RolloutFailed: shadow of version 3 failed: error rate 0.2 > 0.01. Measured: {shadow}"
    assert demo.describe_rollback("3", reason) == (
        "v3 rolled back, production keeps serving: judge_shadow: RolloutFailed: shadow of version 3 failed: "
        "error rate 0.2 > 0.01 (" + line.removeprefix("shadow passed: ") + ")")
    assert demo.describe_rollback("3", "validate: no model") == "v3 rolled back, production keeps serving: validate: no model"
