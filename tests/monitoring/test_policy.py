"""The drift policy, every branch and its boundaries."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from monitoring import policy
from monitoring.policy import Decision, History, Observation, Thresholds, decide

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)
LIMITS = Thresholds(min_rows=2000, drift_share=0.5, quality_drop_margin=0.05, cooldown=timedelta(minutes=30),
                    min_labelled_rows=200)
FRESH = History()


def obs(rows=5000, share=0.0, quality=None, reference=0.75, labelled=0, metric="roc_auc",
        missing=()) -> Observation:
    """An observation as the report gives it: its drift test fails at the share threshold (Evidently's `lt`)."""
    return Observation(rows=rows, drift_share=share, drift_detected=share >= LIMITS.drift_share,
                       missing_columns=tuple(missing), quality_metric=metric, quality=quality,
                       reference_quality=reference, labelled_rows=labelled)


def test_too_few_rows_is_no_judgement_even_when_drifted():
    d = decide(obs(rows=1999, share=1.0), FRESH, LIMITS, NOW)
    assert (d.retrain, d.reason, d.drifted) == (False, policy.TOO_FEW_ROWS, None)


def test_clean_window_does_not_retrain_and_ends_the_episode():
    d = decide(obs(share=0.49), History(attempts_in_episode=1, last_attempt_at=NOW), LIMITS, NOW)
    assert (d.retrain, d.reason, d.drifted, d.data_drift) == (False, policy.NO_DRIFT, False, False)


def test_the_verdict_is_the_report_s_drift_test_not_the_share():
    """The share is for the log: a report whose drift test passed is no drift, whatever the number says."""
    passed = Observation(rows=5000, drift_share=0.9, drift_detected=False)
    failed = Observation(rows=5000, drift_share=0.1, drift_detected=True)
    assert decide(passed, FRESH, LIMITS, NOW).retrain is False
    assert decide(failed, FRESH, LIMITS, NOW).retrain is True


def test_missing_features_are_a_data_quality_incident_not_a_reason_to_retrain():
    d = decide(obs(share=0.1, missing=["wind_gust"]), FRESH, LIMITS, NOW)
    assert (d.retrain, d.reason, d.data_drift, d.data_quality_incident) == (
        False, policy.NO_DRIFT, False, ("wind_gust",))
    assert "DATA-QUALITY INCIDENT: missing wind_gust" in policy.explain(obs(share=0.1, missing=["wind_gust"]), d,
                                                                        LIMITS)


def test_drift_share_at_the_threshold_retrains():
    d = decide(obs(rows=2000, share=0.5), FRESH, LIMITS, NOW)
    assert (d.retrain, d.reason, d.drifted, d.data_drift, d.quality_dropped) == (
        True, policy.RETRAIN, True, True, False)


def test_quality_drop_beyond_the_margin_retrains_without_data_drift():
    d = decide(obs(share=0.1, quality=0.69, labelled=500), FRESH, LIMITS, NOW)
    assert (d.retrain, d.data_drift, d.quality_dropped) == (True, False, True)
    assert d.quality_drop == pytest.approx(0.06)


def test_quality_drop_within_the_margin_is_not_drift():
    d = decide(obs(share=0.1, quality=0.71, labelled=500), FRESH, LIMITS, NOW)
    assert (d.retrain, d.reason, d.quality_dropped) == (False, policy.NO_DRIFT, False)
    assert d.quality_drop == pytest.approx(0.04)


def test_quality_from_too_few_labels_is_ignored():
    d = decide(obs(share=0.1, quality=0.40, labelled=199), FRESH, LIMITS, NOW)
    assert (d.retrain, d.reason, d.quality_drop) == (False, policy.NO_DRIFT, None)


def test_quality_without_a_training_figure_is_ignored():
    d = decide(obs(share=0.1, quality=0.40, reference=None, labelled=5000), FRESH, LIMITS, NOW)
    assert (d.retrain, d.quality_drop) == (False, None)


def test_lower_is_better_metrics_drop_when_they_rise():
    worse = decide(obs(share=0.0, quality=0.52, reference=0.45, labelled=500, metric="log_loss"), FRESH, LIMITS, NOW)
    better = decide(obs(share=0.0, quality=0.30, reference=0.45, labelled=500, metric="log_loss"), FRESH, LIMITS, NOW)
    assert worse.retrain and worse.quality_drop == pytest.approx(0.07)
    assert not better.retrain and better.quality_drop == pytest.approx(-0.15)


def test_no_second_retrain_in_the_same_episode_before_the_retry_time():
    d = decide(obs(share=0.9), History(attempts_in_episode=1, last_attempt_at=NOW - timedelta(minutes=29)),
               LIMITS, NOW)
    assert (d.retrain, d.reason, d.drifted) == (False, policy.ALREADY_TRIGGERED, True)


def test_a_version_still_serving_drifted_traffic_after_the_retry_time_is_retried_then_a_person_is_told():
    """No silent stop: the attempt did not replace the version (monitoring still watches it)."""
    again = decide(obs(share=0.9), History(attempts_in_episode=1, last_attempt_at=NOW - timedelta(minutes=30)),
                   LIMITS, NOW)
    assert (again.retrain, again.reason) == (True, policy.RETRAIN)
    third = decide(obs(share=0.9), History(attempts_in_episode=2, last_attempt_at=NOW - timedelta(hours=1)),
                   LIMITS, NOW)
    assert third.retrain
    done = decide(obs(share=0.9), History(attempts_in_episode=3, last_attempt_at=NOW - timedelta(hours=5)),
                  LIMITS, NOW)
    assert (done.retrain, done.reason) == (False, policy.ATTEMPTS_EXHAUSTED)


def test_cooldown_blocks_until_it_is_over():
    last = NOW - timedelta(minutes=29)
    blocked = decide(obs(share=0.9), History(last_retrain_at=last), LIMITS, NOW)
    assert (blocked.retrain, blocked.reason, blocked.drifted) == (False, policy.COOLDOWN, True)
    assert blocked.cooldown_left_seconds == pytest.approx(60)
    at_end = decide(obs(share=0.9), History(last_retrain_at=NOW - timedelta(minutes=30)), LIMITS, NOW)
    assert (at_end.retrain, at_end.reason) == (True, policy.RETRAIN)


def test_thresholds_come_from_settings(monkeypatch):
    import settings

    monkeypatch.setenv("MLOPS_MONITOR_MIN_ROWS", "123")
    monkeypatch.setenv("MLOPS_DRIFT_SHARE_THRESHOLD", "0.3")
    monkeypatch.setenv("MLOPS_QUALITY_DROP_MARGIN", "0.02")
    monkeypatch.setenv("MLOPS_RETRAIN_COOLDOWN_MINUTES", "7.5")
    limits = Thresholds.from_settings(settings.load())
    assert (limits.min_rows, limits.drift_share, limits.quality_drop_margin, limits.cooldown) == (
        123, 0.3, 0.02, timedelta(minutes=7.5))


@pytest.mark.parametrize("decision, expected", [
    (Decision(True, policy.RETRAIN, True, data_drift=True, quality_drop=None), "RETRAIN (retrain)"),
    (Decision(False, policy.COOLDOWN, True, data_drift=True, cooldown_left_seconds=90), "cool-down 90s left"),
])
def test_the_log_line_carries_the_decision_and_numbers(decision, expected):
    line = policy.explain(obs(rows=4321, share=0.65, labelled=12), decision, LIMITS)
    assert expected in line
    assert "rows 4321 (min 2000)" in line and "drift detected (share 0.650, threshold 0.5)" in line
    assert "quality unknown (12 labelled rows, need 200)" in line


def test_log_loss_and_calibration_catch_what_roc_auc_misses():
    """v1 on July, measured: ROC AUC fell 0.027 (under the margin), log loss 0.561 -> 0.692, predicted 0.358 late
    against 0.458 observed. The primary metric alone said 'no drift'; the other figures say the model is off."""
    seen = Observation(rows=5000, drift_share=0.0, quality_metric="roc_auc", quality=0.688, reference_quality=0.715,
                       labelled_rows=2400,
                       figures={"roc_auc": 0.688, "log_loss": 0.692, "brier": 0.247, "late_rate": 0.458,
                                "mean_probability": 0.358, "calibration_gap": -0.100},
                       reference_figures={"roc_auc": 0.715, "log_loss": 0.561, "brier": 0.189})
    d = decide(seen, FRESH, LIMITS, NOW)
    assert (d.retrain, d.data_drift, d.quality_dropped) == (True, False, True)
    assert [r.split(" ")[0] for r in d.quality_reasons] == ["log_loss", "brier", "calibration"]
    assert "calibration gap -0.1000 (predicted 0.3580, observed 0.4580)" in d.quality_reasons[2]
    assert "QUALITY FELL: log_loss 0.6920 vs 0.5610" in policy.explain(seen, d, LIMITS)


def test_a_calibrated_model_whose_figures_hold_is_not_retrained():
    seen = Observation(rows=5000, drift_share=0.0, quality=0.71, reference_quality=0.715, labelled_rows=2400,
                       figures={"roc_auc": 0.71, "log_loss": 0.57, "brier": 0.19, "late_rate": 0.30,
                                "mean_probability": 0.32, "calibration_gap": 0.02},
                       reference_figures={"roc_auc": 0.715, "log_loss": 0.561, "brier": 0.189})
    d = decide(seen, FRESH, LIMITS, NOW)
    assert (d.retrain, d.quality_dropped, d.quality_reasons) == (False, False, ())


def test_quality_figures_from_too_few_labels_are_not_judged():
    seen = Observation(rows=5000, drift_share=0.0, labelled_rows=199,
                       figures={"log_loss": 2.0, "late_rate": 0.9, "mean_probability": 0.1, "calibration_gap": -0.8},
                       reference_figures={"log_loss": 0.5})
    assert decide(seen, FRESH, LIMITS, NOW).quality_reasons == ()


def test_an_earlier_window_judged_again_on_late_labels_retrains_with_its_own_reason():
    clean = obs(share=0.1, quality=0.75, labelled=4000)
    late = obs(quality=0.62, labelled=4800)  # the previous window, its last flights' labels arrived since
    d = decide(clean, FRESH, LIMITS, NOW, earlier=("w-07", late))
    assert (d.retrain, d.data_drift, d.quality_dropped) == (True, False, True)
    assert d.quality_reasons == ("window w-07 judged again on 4800 labelled flights: roc_auc 0.6200 vs 0.7500 in "
                                 "training (worse by 0.1300 > 0.05)",)
    assert decide(clean, FRESH, LIMITS, NOW, earlier=("w-07", obs(quality=0.74, labelled=4800))).retrain is False


def test_the_calibration_gap_is_judged_at_the_training_weeks_swing_when_wider():
    figures = {"late_rate": 0.228, "mean_probability": 0.300, "calibration_gap": 0.072}
    base = dict(rows=5000, drift_share=0.0, quality=0.72, reference_quality=0.70, labelled_rows=5000,
                figures=figures, reference_figures={"roc_auc": 0.70})
    assert decide(Observation(**base), FRESH, LIMITS, NOW).retrain is True  # the settings' 0.05
    calm = decide(Observation(**base, calibration_gap_limit=0.119), FRESH, LIMITS, NOW)
    assert calm.retrain is False and calm.quality_reasons == ()
