"""The same season starts no retraining; a new season does. On the real data, the way the loop judges it.

v1 is trained as training trains it: Jan-Feb flights with point-in-time features,
the time split, the decision threshold on valid, the test metrics, the reference
sample and the per-column thresholds calibrated on 7-day windows of its train part.
March is then served as serving serves it (every flight, features as of one hour
before departure: the parity test holds these equal to the online answers) and
judged the way the monitoring DAG judges a window: 7 days of departures, the
Evidently report with its tests, then the policy, labels included. No March window
may start a retraining. The first July week, judged the same way, must, and for
the seasonal weather.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest

from monitoring_helpers import ingest_month_elsewhere, reload_settings

pytestmark = pytest.mark.integration

WINDOW_DAYS = 7


def _flights_between(start: str, end: str) -> pd.DataFrame:
    from features.store import FLIGHTS_TABLE, read_offline_table

    flights = read_offline_table(FLIGHTS_TABLE).drop_duplicates("flight_id", keep="last")
    t = flights["event_timestamp"]
    return flights[(t >= pd.Timestamp(start, tz="UTC")) & (t < pd.Timestamp(end, tz="UTC"))]


@pytest.fixture(scope="module")
def v1(feature_data):
    """v1 as training makes it, on Jan-Feb: the model, its reference and thresholds, its test metrics."""
    from features.compute import LABEL, model_frame
    from monitoring.calibration import calibrate
    from monitoring.report import Reference
    from serving.inference_log import PROBABILITY
    from training import candidates, metrics, split
    from training.dataset import with_features
    from training.tasks import _reference
    from training.tracking import REFERENCE_PREDICTION

    rows = with_features(_flights_between("2013-01-01", "2013-03-01")).reset_index(drop=True)
    part = split.time_split(rows)
    train, valid, test = (rows[part == p] for p in split.PARTS)
    x_train, y_train = model_frame(train), train[LABEL].astype(int)
    model = candidates.build("hist_gb").fit(x_train, y_train)
    p_valid = model.predict_proba(model_frame(valid))[:, 1]
    threshold = metrics.decision_threshold(valid[LABEL].astype(int), p_valid)
    test_scores = metrics.scores(test[LABEL].astype(int), model.predict_proba(model_frame(test))[:, 1], threshold)
    reference = _reference(train, x_train, y_train, model.predict_proba(x_train)[:, 1])
    thresholds = calibrate(x_train.assign(event_timestamp=train["event_timestamp"].to_numpy(),
                                          **{LABEL: y_train.to_numpy()}), reference, WINDOW_DAYS)
    frame = reference.rename(columns={REFERENCE_PREDICTION: PROBABILITY})
    ref = Reference(version="1", run_id="seasons", frame=frame, metrics=metrics.prefixed("test", test_scores),
                    decision_threshold=threshold, thresholds=thresholds)
    return model, ref


def served(model, ref, flights: pd.DataFrame) -> pd.DataFrame:
    """The flights as the inference log holds them once their labels have arrived."""
    from features.compute import model_frame
    from serving.inference_log import DEPARTURE, PREDICTION, PROBABILITY
    from training.dataset import with_features

    rows = with_features(flights).reset_index(drop=True)
    rows[PROBABILITY] = model.predict_proba(model_frame(rows))[:, 1]
    rows[PREDICTION] = (rows[PROBABILITY] >= ref.decision_threshold).astype("int64")
    rows[DEPARTURE] = rows["event_timestamp"]
    return rows


def judge(rows: pd.DataFrame, ref, cfg, window_id: str) -> tuple[dict, object]:
    from monitoring import policy, report
    from monitoring.tasks import observation

    window = {"id": window_id, "start": None, "end": None, "rows": len(rows), "files": []}
    summary = report.build(rows, ref, model_name=cfg.model_name, window=window, cfg=cfg,
                           min_labelled_rows=policy.MIN_LABELLED_ROWS)
    decision = policy.decide(observation(summary), policy.History(), policy.Thresholds.from_settings(cfg),
                             datetime.now(timezone.utc))
    return summary, decision


def test_a_march_served_after_a_winter_model_starts_no_retraining(v1, monitor_env):
    from monitoring.calibration import spans

    model, ref = v1
    march = served(model, ref, _flights_between("2013-03-01", "2013-04-01"))
    weeks = spans(march, WINDOW_DAYS)
    assert len(weeks) == 4 and all(len(w) >= monitor_env.monitor_min_rows for w in weeks)
    for i, week in enumerate(weeks):
        summary, decision = judge(week, ref, monitor_env, f"march-{i}")
        assert summary["calibrated"] and summary["quality"]["labelled_rows"] == len(week)
        # The late rate moves by week (0.23, 0.32, 0.31, 0.22 in March's): the gap is judged against the
        # swing of the training weeks (monitoring.calibration.gap_limit), not a fixed 0.05.
        assert not decision.retrain, (i, decision, summary["failed_tests"], summary["column_scores"],
                                      summary["quality"])
        assert not summary["drift_detected"] and summary["failed_tests"] == [], summary["column_scores"]


def test_the_first_july_week_drifts_on_the_seasonal_weather(v1, monitor_env, samples_dir, tmp_path):
    model, ref = v1
    home = tmp_path / "july-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        for var in ("MLOPS_FEAST_REGISTRY", "MLOPS_FEAST_ONLINE_STORE", "MLOPS_FEAST_OFFLINE_DIR",
                    "MLOPS_STORAGE_URL"):
            mp.delenv(var, raising=False)
        reload_settings()
        try:
            ingest_month_elsewhere("2013-07", samples_dir, home)
            from features.store import feature_store

            feature_store(apply=True)
            july = served(model, ref, _flights_between("2013-07-01", "2013-07-08"))
        finally:
            mp.undo()
            cfg = reload_settings()
    summary, decision = judge(july, ref, cfg, "july-0")
    assert decision.retrain and decision.data_drift, (decision, summary["column_scores"])
    assert {"temp", "dewp"} <= set(summary["drifted_columns"])
    assert any(t.startswith("Share of Drifted Columns") for t in summary["failed_tests"])
