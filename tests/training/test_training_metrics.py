"""Metrics and the decision threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import dataset, metrics


def test_scores_are_right_on_a_known_case():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9])
    s = metrics.scores(y, p, threshold=0.5)
    assert s["roc_auc"] == pytest.approx(0.75)
    assert s["f1"] == pytest.approx(0.5)  # predicted positive: 0.6 (wrong) and 0.9 (right)
    assert s["brier"] == pytest.approx(np.mean((p - y) ** 2))
    with pytest.raises(ValueError, match="both classes"):
        metrics.scores(np.zeros(4), p, 0.5)


def test_the_threshold_maximises_f1():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 3000)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.15, 3000), 0, 1)
    t = metrics.decision_threshold(y, p)
    best = metrics.scores(y, p, t)["f1"]
    for other in np.linspace(0.05, 0.95, 19):
        assert metrics.scores(y, p, other)["f1"] <= best + 1e-12
    assert 0 < t < 1


def test_the_cap_keeps_the_newest_half_whole_and_samples_the_older_rows():
    n = 1000
    df = pd.DataFrame({"flight_id": [f"f{i:04d}" for i in range(n)],
                       "event_timestamp": pd.date_range("2013-01-01", periods=n, freq="h", tz="UTC")})
    capped = dataset.cap_rows(df.sample(frac=1, random_state=3), max_rows=200)
    assert len(capped) == 200
    assert capped["flight_id"].is_unique and capped["event_timestamp"].is_monotonic_increasing
    assert list(capped["flight_id"].tail(100)) == list(df["flight_id"].tail(100))
    older = capped.head(100)
    assert older["event_timestamp"].max() < df["event_timestamp"].iloc[-100]
    assert older["event_timestamp"].min() < df["event_timestamp"].iloc[300]  # spread over the old part
    assert capped.equals(dataset.cap_rows(df, max_rows=200))  # deterministic
    assert dataset.cap_rows(df, max_rows=0) is df and dataset.cap_rows(df, max_rows=n) is df


def test_every_metric_has_a_direction_and_every_caller_gets_all_of_them():
    from monitoring.report import quality_figures

    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9])
    assert tuple(metrics.scores(y, p, 0.5)) == metrics.METRICS
    assert set(metrics.HIGHER_IS_BETTER) == set(metrics.METRICS)
    assert set(metrics.RECHECKED) <= set(metrics.METRICS) and metrics.PRIMARY in metrics.METRICS
    served = quality_figures(pd.Series(y), pd.Series(p), pd.Series((p >= 0.5).astype(int)))
    assert set(served) == {*metrics.METRICS, "late_rate", "mean_probability", "calibration_gap"}
    assert served["calibration_gap"] == pytest.approx(p.mean() - y.mean())
    assert {k: served[k] for k in metrics.METRICS} == metrics.scores(y, p, 0.5)


def test_certain_wrong_answers_give_a_finite_log_loss_and_one_class_is_refused_everywhere():
    from monitoring.report import quality_figures

    y, p = np.array([0, 1]), np.array([1.0, 0.0])
    assert np.isfinite(metrics.scores(y, p, 0.5)["log_loss"])
    with pytest.raises(metrics.SingleClass):
        metrics.scores(np.ones(3), np.array([0.2, 0.5, 0.9]), 0.5)
    one_class = quality_figures(pd.Series([1, 1]), pd.Series([0.2, 0.9]), pd.Series([0, 1]))
    assert one_class["roc_auc"] is None and one_class["late_rate"] == 1.0
