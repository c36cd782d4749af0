"""Per-column drift thresholds calibrated on the training period, and the report that uses them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.compute import MODEL_FEATURES
from monitoring import calibration, report

from monitoring_helpers import reference_sample

WINDOW = 1000
WINDOW_DAYS = 7


@pytest.fixture(scope="module")
def calibrated(served) -> tuple[dict, pd.DataFrame]:
    """Jan-Mar served-like rows as the training part, 7-day windows, against the reference sample."""
    history = pd.concat([served["reference"], served["same_season"]]).sort_values("event_timestamp")
    reference = report.served_frame(reference_sample(served["reference"]))
    frame = report.served_frame(history).assign(event_timestamp=history["event_timestamp"].to_numpy())
    return calibration.calibrate(frame, reference, WINDOW_DAYS), reference


def test_each_column_gets_the_margin_times_its_highest_score_inside_the_training_period(calibrated):
    thresholds, _ = calibrated
    assert thresholds["window_days"] == WINDOW_DAYS and thresholds["windows"] >= 5
    for column in MODEL_FEATURES:
        entry = thresholds["columns"][column]
        assert entry["threshold"] == pytest.approx(max(calibration.MARGIN * entry["max_in_training"],
                                                       calibration.FLOOR), abs=2e-4)  # both rounded to 4 places
        assert entry["judged"] == (entry["threshold"] < calibration.CAP)
    # Weather moves more between windows than the planes do: the thresholds say so.
    assert thresholds["columns"]["temp"]["threshold"] > thresholds["columns"]["seats"]["threshold"]


def test_july_drifts_and_the_same_season_does_not_with_calibrated_thresholds(calibrated, served):
    thresholds, reference = calibrated
    july = report.drift(report.served_frame(served["july"]), reference, 2.0, 0.08, calibrated=thresholds)
    assert july.drift_detected and {"temp", "dewp"} <= set(july.drifted), july.scores
    assert july.thresholds["temp"] == thresholds["columns"]["temp"]["threshold"]
    same = report.drift(report.served_frame(served["same_season"].head(WINDOW)), reference, 2.0, 0.08,
                        calibrated=thresholds)
    assert not same.drift_detected and same.failed_tests == [], same.scores


def test_a_column_that_moves_as_much_inside_the_training_period_is_left_out_and_says_why(served):
    history = report.served_frame(served["reference"]).assign(
        event_timestamp=pd.date_range("2013-01-01", periods=len(served["reference"]), freq="10min", tz="UTC"))
    # Short-haul flights only, but for one window of long-haul ones: inside the training period itself one
    # window already looks like another world, so a window that differs is no sign of a new period.
    window = len(history) // 10
    history["distance"] = 200.0
    history.iloc[3 * window:4 * window, history.columns.get_loc("distance")] = 2500.0
    reference = history
    thresholds = calibration.calibrate(history, reference, window * 10 / (24 * 60))  # days of 10-min rows
    entry = thresholds["columns"]["distance"]
    assert not entry["judged"] and entry["threshold"] >= calibration.CAP and "cannot tell periods apart" in entry["why"]
    result = report.drift(history.iloc[3 * window:4 * window], reference, 2.0, 0.08, calibrated=thresholds)
    assert "distance" not in result.checked and "distance" in result.not_judged
    assert result.scores["distance"] >= calibration.CAP / calibration.MARGIN  # still scored, for information
    assert not any("distance" in t for t in result.failed_tests)


def test_too_little_history_is_not_calibrated(served):
    frame = report.served_frame(served["reference"]).assign(
        event_timestamp=pd.date_range("2013-01-01", periods=len(served["reference"]), freq="10min", tz="UTC"))
    assert calibration.calibrate(frame.head(2 * WINDOW), frame, WINDOW_DAYS) is None  # 14 days: 1 span
    judged, left_out = calibration.thresholds(None, 2.0)
    assert judged == {c: 2.0 for c in MODEL_FEATURES} and left_out == {}


def test_the_score_is_evidently_s(served):
    """The calibration scores columns the way the report does: compare with Evidently's ValueDrift."""
    reference = report.served_frame(reference_sample(served["reference"]))
    current = report.served_frame(served["july"])
    result = report.drift(current, reference, 2.0, 0.08)
    for column in ("temp", "dewp", "distance", "carrier_late_rate_7d"):
        assert calibration.normed_wasserstein(reference[column], current[column]) == pytest.approx(
            result.scores[column], abs=1e-3)
