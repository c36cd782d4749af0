"""Real Evidently reports on served-like rows from the data: drifted (July) and not (same season)."""

from __future__ import annotations

import time

import pandas as pd
import pytest

import storage
from features.compute import MODEL_FEATURES
from monitoring import inference, report, tasks

from monitoring_helpers import reference_sample, register_version, write_log

COLUMN_THRESHOLD, SHARE_THRESHOLD = 0.1, 0.5
WEATHER = ["temp", "dewp"]


def _drift(current: pd.DataFrame, served: dict) -> report.DriftResult:
    reference = report.served_frame(reference_sample(served["reference"]))
    return report.drift(report.served_frame(current), reference, COLUMN_THRESHOLD, SHARE_THRESHOLD)


def test_july_traffic_drifts_against_a_winter_reference(served):
    result = _drift(served["july"], served)
    assert result.share >= SHARE_THRESHOLD and result.drift_detected, result.scores
    assert set(WEATHER) <= set(result.drifted)
    assert result.prediction_score is not None and result.prediction_score >= COLUMN_THRESHOLD
    assert result.checked == MODEL_FEATURES and not result.missing_columns
    assert [t for t in result.failed_tests if t.startswith("Share of Drifted Columns")], result.failed_tests


def test_same_season_traffic_does_not_drift(served):
    """A random sample of other Jan-Mar flights: the season of the reference, not a few consecutive days."""
    result = _drift(served["same_season"], served)
    assert result.share < SHARE_THRESHOLD and not result.drift_detected and result.failed_tests == [], result.scores
    assert not set(WEATHER) & set(result.drifted)
    assert result.prediction_score < COLUMN_THRESHOLD


def test_a_feature_lost_by_serving_is_a_data_quality_incident_not_drift(served):
    current = served["same_season"].copy()
    current["wind_gust"] = float("nan")
    result = _drift(current, served)
    assert result.missing_columns == ["wind_gust"] and "wind_gust" not in result.drifted + result.checked
    assert not result.drift_detected
    assert [t for t in result.failed_tests if "wind_gust" in t and "missing" in t.lower()], result.failed_tests


def test_the_html_the_json_and_the_policy_give_one_verdict(monitor_env, served):
    """The window that used to disagree: one drifted column plus a lost one.

    The old rule counted the empty `wind_gust` as drifted (2 of 23 = 0.087 >= 0.08: retrain)
    while Evidently's HTML, which never saw it, said "NOT detected". Now the HTML, the
    JSON and the policy say the same: no drift, and a data-quality incident on wind_gust.
    """
    import settings
    from monitoring import policy

    cfg = settings.get()
    current = served["same_season"].copy()
    current["wind_gust"] = float("nan")
    current["pressure"] = current["pressure"] + 40.0  # a broken barometer: one column far off
    ref = report.Reference(version="7", run_id="r", frame=reference_sample(served["reference"]),
                           metrics={"test_roc_auc": 0.7}, decision_threshold=0.3)
    window = {"id": "20260701T120000Z-20260701T121000Z-onever", "start": None, "end": None,
              "rows": len(current), "files": []}
    summary = report.build(current, ref, model_name=cfg.model_name, window=window, cfg=cfg, min_labelled_rows=200)

    assert summary["drifted_columns"] == ["pressure"] and summary["missing_columns"] == ["wind_gust"]
    assert summary["drift_detected"] is False and summary["drift_share"] < cfg.drift_share_threshold
    saved = storage.get().read_json(summary["json_path"])
    statuses = {t["name"]: t["status"] for t in saved["drift"]["tests"]}
    share_test = next(n for n in statuses if n.startswith("Share of Drifted Columns"))
    missing_test = next(n for n in statuses if n.startswith("Column 'wind_gust' missing values"))
    pressure_test = next(n for n in statuses if n.startswith("Value drift for pressure:"))
    assert (statuses[share_test], statuses[missing_test], statuses[pressure_test]) == ("SUCCESS", "FAIL", "WARNING")
    assert summary["failed_tests"] == [missing_test]
    html = storage.get().read_bytes(summary["report_path"]).decode()
    for name in (share_test, missing_test, pressure_test):
        assert name in html
    decision = tasks.judge_window(summary)
    assert (decision["retrain"], decision["data_drift"], list(decision["data_quality_incident"])) == (
        False, False, ["wind_gust"])

    # The same window with a second column far off: now the report's drift test fails, and the policy retrains.
    current["temp"] = current["temp"] + 60.0
    window["id"] = "20260701T130000Z-20260701T131000Z-onever"
    drifted = report.build(current, ref, model_name=cfg.model_name, window=window, cfg=cfg, min_labelled_rows=200)
    saved = storage.get().read_json(drifted["json_path"])
    failed = [t["name"] for t in saved["drift"]["tests"] if t["status"] == "FAIL"]
    assert drifted["drift_detected"] is True and sorted(drifted["failed_tests"]) == sorted(failed)
    assert any(n.startswith("Share of Drifted Columns") for n in failed)
    assert tasks.judge_window(drifted)["retrain"] is True
    assert policy.NO_DRIFT != tasks.judge_window(drifted)["reason"]


def test_sample_is_capped_seeded_and_leaves_small_windows_alone():
    df = pd.DataFrame({"x": range(1000)})
    assert report.sample(df, 5000) is df
    capped = report.sample(df, 100)
    assert len(capped) == 100 and capped.equals(report.sample(df, 100))


def test_a_big_window_is_sampled_to_the_cap_and_saved(monitor_env, served, monkeypatch):
    """60,000 served rows: the report runs on `drift_sample_cap` of them and writes HTML and JSON."""
    monkeypatch.setenv("MLOPS_DRIFT_SAMPLE_CAP", "20000")
    import settings

    settings.get.cache_clear()
    cfg = settings.get()
    rows = pd.concat([served["same_season"]] * 30, ignore_index=True).head(60_000)
    ref = report.Reference(version="7", run_id="r", frame=reference_sample(served["reference"]),
                           metrics={"test_roc_auc": 0.7}, decision_threshold=0.3)
    window = {"id": "20260701T120000Z-20260701T121000Z-abcdef", "start": None, "end": None, "rows": len(rows),
              "files": []}
    t0 = time.monotonic()
    summary = report.build(rows, ref, model_name=cfg.model_name, window=window, cfg=cfg, min_labelled_rows=200)
    print(f"report of 60,000 rows sampled to 20,000: {time.monotonic() - t0:.1f}s")
    assert (summary["rows"], summary["sampled_rows"], summary["reference_rows"]) == (60_000, 20_000, 4000)
    assert summary["drift_share"] < cfg.drift_share_threshold
    base = storage.get().url("reports", cfg.model_name, "v7", window["id"])
    assert summary["report_path"] == base + ".html" and summary["json_path"] == base + ".json"
    assert b"<html" in storage.get().read_bytes(summary["report_path"]).lower()
    saved = storage.get().read_json(summary["json_path"])
    assert saved["summary"]["drift_share"] == summary["drift_share"] and saved["drift"]["metrics"]


@pytest.mark.integration
def test_report_window_with_labels_adds_the_quality_view(monitor_env, mlflow_uri, served):
    """Jan-Mar traffic, whose labels are in the store: drift and quality views against the registered reference."""
    name = monitor_env.model_name
    version = register_version(name, reference_sample(served["reference"]), {"test_roc_auc": 0.74})
    rows = served["same_season"].head(1500)
    urls = write_log(rows, name, version, per_file=500)
    summary = tasks.report_window({"version": version, "files": urls, "rows": 1500})

    assert summary["model_version"] == version and summary["rows"] == 1500
    assert summary["drift_share"] < monitor_env.drift_share_threshold
    assert summary["window"]["files"] == sorted(u.rsplit("/", 1)[1] for u in urls)
    logged = inference.read_window(urls)["request_time"]
    assert summary["window"]["id"] == inference.window_id(urls, logged)
    assert summary["window"]["id"].startswith(f"{logged.min():%Y%m%dT%H%M%SZ}-{logged.max():%Y%m%dT%H%M%SZ}-")
    quality = summary["quality"]
    expected = report.quality_figures(rows["is_late"], rows["probability"], rows["prediction"])
    assert quality["labelled_rows"] == 1500 and quality["reference"] == pytest.approx(0.74)
    assert quality["value"] == pytest.approx(expected["roc_auc"]) and quality["figures"]["f1"] == pytest.approx(
        expected["f1"])
    assert storage.get().exists(quality["report_path"]) and quality["report_path"].endswith(".quality.html")


@pytest.mark.integration
def test_report_window_of_july_traffic_has_no_labels_yet(monitor_env, mlflow_uri, served):
    name = monitor_env.model_name
    version = register_version(name, reference_sample(served["reference"]), {"test_roc_auc": 0.74})
    urls = write_log(served["july"].head(1200), name, version, per_file=600)
    summary = tasks.report_window({"version": version, "files": urls, "rows": 1200})
    assert summary["drift_share"] >= monitor_env.drift_share_threshold
    assert summary["quality"]["labelled_rows"] == 0 and summary["quality"]["value"] is None
    assert storage.get().exists(summary["report_path"])


@pytest.mark.integration
def test_a_version_without_reference_fails_once_not_forever(monitor_env, mlflow_uri, served):
    from monitoring import state

    name = monitor_env.model_name
    urls = write_log(served["july"].head(1000), name, "99", per_file=1000)
    with pytest.raises(report.ReferenceMissing):
        tasks.report_window({"version": "99", "files": urls, "rows": 1000})
    assert inference.new_files(name, "99", {}) == []  # the next run waits for new traffic
    entry = state.version_state(state.load(name), "99")["windows"][0]
    assert entry["decision"]["reason"] == "no_reference" and "reference.parquet" in entry["error"]


def test_a_failing_report_gives_up_on_its_window_only_on_the_last_attempt(monitor_env, served, monkeypatch):
    name = monitor_env.model_name
    urls = write_log(served["same_season"].head(1000), name, "3", per_file=500)
    ref = report.Reference(version="3", run_id="r", frame=reference_sample(served["reference"]))
    monkeypatch.setattr(report, "load_reference", lambda *a: ref)
    monkeypatch.setattr(report, "build", lambda *a, **k: 1 / 0)
    traffic = {"version": "3", "files": urls, "rows": 1000}
    with pytest.raises(ZeroDivisionError):
        tasks.report_window(traffic, last_attempt=False)
    assert [u for u, _ in inference.new_files(name, "3", {})] == urls  # a retry will see the same window
    with pytest.raises(ZeroDivisionError):
        tasks.report_window(traffic, last_attempt=True)
    assert inference.new_files(name, "3", {}) == []
