"""The live feeds on a real Feast store (SQLite online, duckdb over parquet offline): push, validation, quarantine."""

from __future__ import annotations

import pandas as pd
import pytest

import storage
from features import compute, feeds, names
from features.store import feature_store, read_offline_table, table_dir

HOUR = pd.Timestamp("2013-01-10 14:51", tz="UTC")  # the observation of 14:00 UTC, known at 14:51


@pytest.fixture
def store(home):
    return feature_store(apply=True)


@pytest.fixture(scope="module")
def weather(samples_dir) -> pd.DataFrame:
    return compute.weather_rows(pd.read_parquet(samples_dir / "weather_2013-01.parquet"))


@pytest.fixture(scope="module")
def january(samples_dir) -> pd.DataFrame:
    return compute.flight_rows(pd.read_parquet(samples_dir / "flights_2013-01.parquet"), "jan")


def online(store, view: str, features: list[str], origins) -> pd.DataFrame:
    """The online store's current values (and their timestamps) for these origins."""
    refs = [f"{view}:{f}" for f in features]
    got = store.get_online_features(refs, [{names.ORIGIN: o} for o in origins]).to_dict(
        include_event_timestamps=True)
    return pd.DataFrame(got)


def as_of_join(store, view: str, features: list[str], origins, at: pd.Timestamp) -> pd.DataFrame:
    entities = pd.DataFrame({names.ORIGIN: list(origins), "event_timestamp": at})
    entities["event_timestamp"] = entities["event_timestamp"].astype(compute.TS)
    return store.get_historical_features(entity_df=entities, features=[f"{view}:{f}" for f in features]).to_df()


def epoch(ts: pd.Timestamp) -> int:
    return int(ts.timestamp())


def test_a_pushed_weather_hour_is_online_with_its_timestamp_and_offline(store, weather):
    hour = feeds.weather_feed_rows(weather, HOUR - pd.Timedelta(hours=1), HOUR)
    assert sorted(hour[names.ORIGIN]) == list(names.ORIGINS) and (hour["event_timestamp"] == HOUR).all()

    result = feeds.push_weather(hour, clock=HOUR, store=store)

    assert (result.rows_in, result.rows_pushed, result.rows_quarantined) == (3, 3, 0)
    got = online(store, names.WEATHER_VIEW, ["temp", "pressure"], hour[names.ORIGIN]).set_index(names.ORIGIN)
    want = hour.set_index(names.ORIGIN)
    assert got["temp"].to_numpy() == pytest.approx(want.loc[got.index, "temp"].to_numpy())
    assert (got["temp__ts"] == epoch(HOUR)).all()
    # Offline: the rows are in the view's table, and a point-in-time join 40 minutes later finds them.
    assert len(read_offline_table(names.WEATHER_VIEW)) == 3
    joined = as_of_join(store, names.WEATHER_VIEW, ["temp"], names.ORIGINS, HOUR + pd.Timedelta(minutes=40))
    joined = joined.set_index(names.ORIGIN)
    assert joined["temp"].to_numpy() == pytest.approx(want.loc[joined.index, "temp"].to_numpy())
    # ... and one minute before the observation was known, it finds nothing.
    early = as_of_join(store, names.WEATHER_VIEW, ["temp"], names.ORIGINS, HOUR - pd.Timedelta(minutes=1))
    assert early["temp"].isna().all()


def test_a_pushed_congestion_row_is_online_with_its_timestamp_and_offline(store, january):
    clock = pd.Timestamp("2013-01-10 14:00", tz="UTC")
    rows = feeds.congestion_feed_rows(january, clock - compute.CONGESTION_GRID, clock)
    assert len(rows) == 3 and (rows["event_timestamp"] == clock).all()
    assert rows[names.CONGESTION_FEATURES[0]].gt(0).all()  # a busy afternoon

    result = feeds.push_congestion(rows, clock=clock, store=store)

    assert result.rows_pushed == 3 and result.rows_quarantined == 0
    got = online(store, names.CONGESTION_VIEW, names.CONGESTION_FEATURES, rows[names.ORIGIN]).set_index(names.ORIGIN)
    want = rows.set_index(names.ORIGIN).loc[got.index]
    for col in names.CONGESTION_FEATURES:
        assert got[col].to_numpy() == pytest.approx(want[col].to_numpy())
        assert (got[f"{col}__ts"] == epoch(clock)).all()
    joined = as_of_join(store, names.CONGESTION_VIEW, names.CONGESTION_FEATURES, names.ORIGINS,
                        clock + pd.Timedelta(minutes=4)).set_index(names.ORIGIN)
    assert joined[names.CONGESTION_FEATURES[0]].to_numpy() == pytest.approx(
        rows.set_index(names.ORIGIN).loc[joined.index, names.CONGESTION_FEATURES[0]].to_numpy())
    # Past the view's TTL (two grid steps) the row no longer counts.
    stale = as_of_join(store, names.CONGESTION_VIEW, names.CONGESTION_FEATURES, names.ORIGINS,
                       clock + compute.CONGESTION_TTL + pd.Timedelta(minutes=1))
    assert stale[names.CONGESTION_FEATURES[0]].isna().all()


def test_a_retried_push_overwrites_its_offline_part(store, weather):
    hour = feeds.weather_feed_rows(weather, HOUR - pd.Timedelta(hours=1), HOUR)
    first = feeds.push_weather(hour, clock=HOUR, store=store)
    again = feeds.push_weather(hour, clock=HOUR, store=store)
    assert first.offline_part == again.offline_part
    assert len(read_offline_table(names.WEATHER_VIEW)) == 3


# -- bad inputs: (name, how to spoil an hour of weather, the quarantined rows, the reason's start) ------------
def _wrong_schema(hour: pd.DataFrame) -> pd.DataFrame:
    return hour.drop(columns=["pressure"]).assign(pressur=hour["pressure"])


def _text_feature(hour: pd.DataFrame) -> pd.DataFrame:
    return hour.assign(temp=hour["temp"].map(lambda v: f"{v:.1f}F"))


def _future(hour: pd.DataFrame) -> pd.DataFrame:
    bad = hour.copy()
    bad.loc[bad[names.ORIGIN] == "JFK", "event_timestamp"] = HOUR + pd.Timedelta(hours=1)
    return bad


def _unknown_origin(hour: pd.DataFrame) -> pd.DataFrame:
    bad = hour.copy()
    bad.loc[bad[names.ORIGIN] == "JFK", names.ORIGIN] = "XYZ"
    return bad


BAD = {
    "wrong schema": (_wrong_schema, "whole", "schema: the weather feed expects columns"),
    "feature of the wrong type": (_text_feature, "whole", "schema: feature columns must be numeric"),
    "future timestamp": (_future, "JFK", "future: event_timestamp 2013-01-10T15:51:00+00:00 is after the feed clock"),
    "unknown entity": (_unknown_origin, "XYZ", "unknown entity: origin 'XYZ' is not a known airport"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_feed_input_is_quarantined_with_a_reason_and_never_reaches_the_online_store(store, weather, case):
    spoil, which, reason = BAD[case]
    hour = feeds.weather_feed_rows(weather, HOUR - pd.Timedelta(hours=1), HOUR)
    batch = spoil(hour)

    result = feeds.push_weather(batch, clock=HOUR, store=store)

    files = storage.get()
    assert result.rows_in == result.rows_pushed + result.rows_quarantined == len(batch)
    quarantined = files.read_parquet(result.quarantined_at)
    record = files.read_json(result.quarantined_at + ".reason.json")
    assert record["feed"] == "weather" and record["feed_clock"] == HOUR.isoformat()
    assert "/quarantine/" in result.quarantined_at
    now_online = online(store, names.WEATHER_VIEW, ["temp"], [*names.ORIGINS, "XYZ"]).set_index(names.ORIGIN)
    if which == "whole":  # rejected whole: nothing pushed, online or offline
        assert result.rows_pushed == 0 and result.reason.startswith(reason)
        assert record["reason"].startswith(reason) and record["rows_quarantined"] == len(batch) == len(quarantined)
        assert now_online["temp"].isna().all()
        assert read_offline_table(names.WEATHER_VIEW).empty
        return
    # One row rejected with its reason; the other two are pushed.
    assert result.rows_pushed == 2 and len(quarantined) == 1
    assert quarantined["reason"].iloc[0].startswith(reason), quarantined["reason"].iloc[0]
    assert sum(record["reason_counts"].values()) == 1
    assert now_online.loc["JFK", "temp"] is None or pd.isna(now_online.loc["JFK", "temp"])
    assert pd.isna(now_online.loc["XYZ", "temp"])
    assert now_online.loc[["EWR", "LGA"], "temp"].notna().all()
    offline = read_offline_table(names.WEATHER_VIEW)
    assert sorted(offline[names.ORIGIN]) == ["EWR", "LGA"] and (offline["event_timestamp"] <= HOUR).all()


def test_congestion_feed_rejects_rows_from_the_future_of_its_clock(store, january):
    clock = pd.Timestamp("2013-01-10 14:00", tz="UTC")
    rows = feeds.congestion_feed_rows(january, clock - pd.Timedelta(minutes=15), clock + compute.CONGESTION_GRID)

    result = feeds.push_congestion(rows, clock=clock, store=store)

    assert (result.rows_in, result.rows_pushed, result.rows_quarantined) == (12, 9, 3)
    assert result.reason_counts == {"future": 3}
    got = online(store, names.CONGESTION_VIEW, names.CONGESTION_FEATURES[:1], names.ORIGINS)
    assert (got[f"{names.CONGESTION_FEATURES[0]}__ts"] == epoch(clock)).all()


# -- the outcomes feed: labels as flights arrive, and the delay rates they move --------------------------
@pytest.fixture(scope="module")
def january_raw(samples_dir) -> pd.DataFrame:
    return pd.read_parquet(samples_dir / "flights_2013-01.parquet")


def test_outcomes_pushed_hour_by_hour_give_the_labels_and_the_rates_a_batch_of_the_same_flights_gives(
        store, january_raw):
    start = pd.Timestamp("2013-01-10 00:00", tz="UTC")
    hours = pd.date_range(start + pd.Timedelta(hours=1), start + pd.Timedelta(hours=12), freq="h")
    delivered = 0
    for clock in hours:
        rows = feeds.outcome_feed_rows(january_raw, clock - pd.Timedelta(hours=1), clock)
        if rows.empty:
            continue
        result = feeds.push_outcomes(rows, clock=clock, store=store)
        assert result.rows_quarantined == 0 and result.rows_pushed == len(rows)
        delivered += len(rows)

    labelled = read_offline_table("flights")
    assert len(labelled) == labelled["flight_id"].nunique() == delivered > 100
    assert (labelled["outcome_at"] <= hours[-1]).all() and (labelled["outcome_at"] > start).all()
    assert [p.name for p in table_dir("flights").glob("*.parquet")] == ["feed_outcomes__20130110.parquet"]
    # The carrier rates pushed hour by hour are the rates of one batch of the same flights.
    carrier, _ = compute.delay_stats(labelled, None, pd.Timestamp.now(tz="UTC"))
    pushed = read_offline_table(names.CARRIER_VIEW).sort_values(["carrier", "event_timestamp"])
    want = carrier.sort_values(["carrier", "event_timestamp"])
    assert len(pushed) == len(want) > 0
    assert pushed["carrier_late_rate_7d"].to_numpy() == pytest.approx(want["carrier_late_rate_7d"].to_numpy())
    # Online: each carrier's latest rate, stamped with its hour.
    refs = [f"{names.CARRIER_VIEW}:carrier_late_rate_7d"]
    got = pd.DataFrame(store.get_online_features(refs, [{names.CARRIER: "UA"}]).to_dict(include_event_timestamps=True))
    ua = want[want["carrier"] == "UA"].iloc[-1]
    assert got["carrier_late_rate_7d"].iloc[0] == pytest.approx(ua["carrier_late_rate_7d"])
    assert got["carrier_late_rate_7d__ts"].iloc[0] == epoch(ua["event_timestamp"])


def test_bad_outcomes_are_quarantined_with_a_reason_and_move_nothing_online(store, january_raw):
    clock = pd.Timestamp("2013-01-10 20:00", tz="UTC")
    rows = feeds.outcome_feed_rows(january_raw, clock - pd.Timedelta(hours=1), clock)
    future = feeds.outcome_feed_rows(january_raw, clock, clock + pd.Timedelta(hours=1)).head(2)
    spoiled = rows.head(3).copy()
    spoiled.loc[spoiled.index[0], "carrier"] = "U!"
    batch = pd.concat([spoiled, future], ignore_index=True)

    result = feeds.push_outcomes(batch, clock=clock, store=store)

    assert (result.rows_in, result.rows_pushed, result.rows_quarantined) == (5, 2, 3)
    quarantined = storage.get().read_parquet(result.quarantined_at)
    reasons = sorted(r.split(":")[0] for r in quarantined["reason"])
    assert reasons == ["format", "future", "future"], list(quarantined["reason"])
    assert result.reason_counts == {"format": 1, "future": 2}
    assert len(read_offline_table("flights")) == 2

    whole = feeds.push_outcomes(pd.DataFrame({"origin": ["JFK"], "temp": [3.0]}), clock=clock, store=store)
    assert whole.rows_pushed == 0 and whole.reason.startswith("schema:")
    assert len(read_offline_table("flights")) == 2
