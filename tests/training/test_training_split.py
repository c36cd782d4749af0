"""The time split: no row in two parts, no future data in training, the newest rows are the test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import split


def flights(n: int = 2000, seed: int = 1) -> pd.DataFrame:
    """Departures every 10 minutes (some sharing a minute); labels known 1-9 hours later."""
    rng = np.random.default_rng(seed)
    departure = pd.Timestamp("2013-01-01", tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, n * 10, n)), unit="m")
    return pd.DataFrame({
        "flight_id": [f"f{i}" for i in range(n)],
        "event_timestamp": departure,
        "outcome_at": departure + pd.to_timedelta(rng.integers(60, 540, n), unit="m"),
    }).sample(frac=1, random_state=seed)  # order must not matter


@pytest.fixture
def parted():
    df = flights()
    return df, split.time_split(df)


def test_every_part_is_nonempty_and_sized_by_the_fractions(parted):
    df, part = parted
    counts = part.value_counts()
    assert set(counts.index) <= {split.TRAIN, split.VALID, split.TEST, split.DROPPED}
    assert abs(counts[split.TEST] / len(df) - split.TEST_FRACTION) < 0.01
    # Validation loses the few rows whose outcome came after the test started.
    assert split.VALID_FRACTION - 0.03 < counts[split.VALID] / len(df) <= split.VALID_FRACTION + 0.01


def test_parts_do_not_overlap_in_time_or_rows(parted):
    df, part = parted
    t = {p: df.loc[part == p, "event_timestamp"] for p in split.PARTS}
    assert t[split.TRAIN].max() < t[split.VALID].min()
    assert t[split.VALID].max() < t[split.TEST].min()
    ids = {p: set(df.loc[part == p, "flight_id"]) for p in split.PARTS}
    assert not ids[split.TRAIN] & ids[split.TEST] and not ids[split.TRAIN] & ids[split.VALID]
    assert not ids[split.VALID] & ids[split.TEST]


def test_no_label_used_before_it_was_known(parted):
    """Training labels were known before validation starts, validation labels before the test starts."""
    df, part = parted
    valid_start = df.loc[part == split.VALID, "event_timestamp"].min()
    test_start = df.loc[part == split.TEST, "event_timestamp"].min()
    assert df.loc[part == split.TRAIN, "outcome_at"].max() < valid_start
    assert df.loc[part == split.VALID, "outcome_at"].max() < test_start
    # And the rule did bite: some late-known rows were dropped, none from the test.
    dropped = df[part == split.DROPPED]
    assert len(dropped) > 0
    assert dropped["event_timestamp"].max() < test_start


def test_the_test_part_is_the_newest_and_keeps_every_row(parted):
    df, part = parted
    test_start = df.loc[part == split.TEST, "event_timestamp"].min()
    assert (part[df["event_timestamp"] >= test_start] == split.TEST).all()


def test_rows_sharing_a_departure_time_stay_in_one_part():
    df = flights(200)
    df["event_timestamp"] = df["event_timestamp"].dt.floor("h")  # several rows per timestamp
    part = split.time_split(df)
    per_time = pd.DataFrame({"t": df["event_timestamp"], "p": part}).query("p != 'dropped'").groupby("t")["p"]
    assert (per_time.nunique() == 1).all()


def test_too_little_data_for_three_parts_is_an_error():
    df = flights(3)
    df["event_timestamp"] = df["event_timestamp"].min()
    with pytest.raises(ValueError, match="empty"):
        split.time_split(df)


def test_ranges_report_each_parts_first_and_last_departure(parted):
    df, part = parted
    r = split.ranges(df, part)
    assert r["test_end"] == df["event_timestamp"].max().isoformat()
    assert r["train_start"] == df.loc[part == split.TRAIN, "event_timestamp"].min().isoformat()
    assert pd.Timestamp(r["train_end"]) < pd.Timestamp(r["valid_start"]) <= pd.Timestamp(r["valid_end"]) \
        < pd.Timestamp(r["test_start"])


def test_a_drift_run_is_judged_on_the_drifted_period():
    """History up to the champion's data, then a new period: train on both, judge on the new one only."""
    old = pd.date_range("2013-01-01", "2013-02-28 23:00", freq="h", tz="UTC")
    new = pd.date_range("2013-07-01", "2013-07-03 23:00", freq="10min", tz="UTC")
    departure = pd.Series(old.append(new))
    df = pd.DataFrame({"event_timestamp": departure, "outcome_at": departure + pd.Timedelta(hours=3)})
    since = pd.Timestamp("2013-03-01", tz="UTC")

    part = split.time_split(df, new_since=since)

    assert (part[df["event_timestamp"] <= since] == split.TRAIN).all()  # all the history trains
    new_rows = df["event_timestamp"] > since
    assert (part[new_rows] == split.TRAIN).sum() > 0.4 * new_rows.sum()  # ... with the new period's first half
    assert df.loc[part == split.TEST, "event_timestamp"].min() > df.loc[part == split.VALID, "event_timestamp"].max()
    tested = df.loc[part == split.TEST, "event_timestamp"]
    assert tested.min() > since and len(tested) >= 0.25 * new_rows.sum()
    # Too few new flights: the usual split.
    few = df[df["event_timestamp"] <= pd.Timestamp("2013-07-01 10:00", tz="UTC")]
    assert split.time_split(few, new_since=since).equals(split.time_split(few))
