"""Origin congestion: the computation against a brute-force count, batch edges, and no leakage into training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import compute, names, repo
from features.names import CONGESTION_FEATURES

DEPARTURES, MEAN_DELAY, SCHEDULED = CONGESTION_FEATURES


@pytest.fixture(scope="module")
def january(samples_dir) -> pd.DataFrame:
    return compute.flight_rows(pd.read_parquet(samples_dir / "flights_2013-01.parquet"), "jan")


def departed(flights: pd.DataFrame) -> pd.DataFrame:
    """The flights that left, with their actual departure time."""
    left = flights[flights["dep_delay"].notna()].copy()
    left["dep_at"] = left["event_timestamp"] + pd.to_timedelta(left["dep_delay"], unit="m")
    return left


def naive(ts: pd.Series) -> np.ndarray:
    return pd.to_datetime(ts, utc=True).dt.tz_localize(None).to_numpy("datetime64[us]")


def brute_force(flights: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """For each (origin, event_timestamp = t) point, by comparing every flight with every point:
    departures in (t - 2 h, t], their mean departure delay, departures scheduled in [t - 30 min, t + 30 min]."""
    out = pd.DataFrame(index=points.index, columns=CONGESTION_FEATURES, dtype="float64")
    for origin, p in points.groupby("origin"):
        f = flights[flights["origin"] == origin]
        left = departed(f)
        t = naive(p["event_timestamp"])[:, None]
        dep_at = naive(left["dep_at"])[None, :]
        inside = (dep_at > t - np.timedelta64(2, "h")) & (dep_at <= t)
        n = inside.sum(axis=1)
        delay = np.where(inside, left["dep_delay"].to_numpy()[None, :], 0.0).sum(axis=1)
        sched = naive(f["event_timestamp"])[None, :]
        out.loc[p.index, DEPARTURES] = n
        out.loc[p.index, MEAN_DELAY] = np.where(n > 0, delay / np.maximum(n, 1), np.nan)
        out.loc[p.index, SCHEDULED] = ((sched >= t - np.timedelta64(30, "m"))
                                       & (sched <= t + np.timedelta64(30, "m"))).sum(axis=1)
    return out


def test_congestion_matches_a_brute_force_count_on_real_flights(january):
    rows = compute.congestion_rows(january, None, pd.Timestamp.now(tz="UTC"))
    # A regular grid: every origin, every 5 minutes, from 2 h before the first departure to 2 h after the last.
    step = pd.Timedelta(compute.CONGESTION_GRID)
    for _, g in rows.groupby("origin"):
        assert (g["event_timestamp"].diff().dropna() == step).all()
    assert sorted(rows["origin"].unique()) == list(names.ORIGINS)
    assert rows["event_timestamp"].min() <= january["event_timestamp"].min() - pd.Timedelta(hours=2) + step
    sample = rows.sample(2000, random_state=0)
    busy = rows[rows[DEPARTURES] > 40].sample(100, random_state=0)  # and some of the busiest moments
    points = pd.concat([sample, busy]).reset_index(drop=True)
    want = brute_force(january, points)
    assert want[DEPARTURES].max() > 40 and want[MEAN_DELAY].isna().any()  # busy and quiet moments both
    for col in CONGESTION_FEATURES:
        np.testing.assert_allclose(points[col].to_numpy("float64"), want[col].to_numpy("float64"), rtol=1e-5,
                                   atol=1e-4, err_msg=col)


def test_cancelled_flights_never_left_but_were_scheduled(january):
    cancelled = january[january["dep_delay"].isna()].iloc[0]
    without = january[january["flight_id"] != cancelled["flight_id"]]
    points = pd.DataFrame({"origin": [cancelled["origin"]] * 2,
                           "event_timestamp": [cancelled["event_timestamp"], cancelled["event_timestamp"]
                                               + pd.Timedelta(minutes=30)]})
    points["event_timestamp"] = points["event_timestamp"].astype(compute.TS)
    a, b = compute.congestion_at(january, points), compute.congestion_at(without, points)
    assert (a[DEPARTURES] == b[DEPARTURES]).all()
    assert (a[SCHEDULED] == b[SCHEDULED] + 1).all()


def test_history_from_earlier_batches_feeds_the_window_at_the_batch_start(january):
    cut = pd.Timestamp("2013-01-20 12:00", tz="UTC")
    older, newer = january[january["event_timestamp"] < cut], january[january["event_timestamp"] >= cut]
    created = pd.Timestamp.now(tz="UTC")
    whole = compute.congestion_rows(january, None, created)
    split = compute.congestion_rows(newer, older, created)
    # The later batch starts 2 h before its first departure, so it rewrites the earlier batch's last rows.
    assert split["event_timestamp"].min() <= newer["event_timestamp"].min() - pd.Timedelta(hours=2) \
        + compute.CONGESTION_GRID
    merged = split.merge(whole, on=["origin", "event_timestamp"], suffixes=("_split", "_whole"))
    assert len(merged) == len(split) > 0
    for col in CONGESTION_FEATURES:
        pd.testing.assert_series_equal(merged[f"{col}_split"], merged[f"{col}_whole"], check_names=False)


def test_the_views_ttl_is_two_grid_steps():
    assert repo.origin_congestion.ttl == compute.CONGESTION_TTL == 2 * compute.CONGESTION_GRID
    assert names.MODEL_FEATURES[-len(CONGESTION_FEATURES):] == CONGESTION_FEATURES


def test_training_congestion_never_counts_a_departure_after_the_flights_as_of(feature_data):
    """Flights joined as training joins them (`with_features`, as of PREDICTION_LEAD before departure).

    The row a flight gets is the grid point at or before its as-of time, so its departure
    count must equal a brute-force count over (g - 2 h, g] with g = floor(as_of): never
    anything that left after the as-of, and never the flight itself. (A flight that left
    more than PREDICTION_LEAD early would have left before its own as-of; the earliest
    departure in 2013 is 43 minutes early, so none is excluded here, but such a flight
    would legitimately be counted.)
    """
    from features.store import FLIGHTS_TABLE, read_offline_table
    from training.dataset import AS_OF, with_features

    allf = read_offline_table(FLIGHTS_TABLE).drop_duplicates("flight_id", keep="last")
    sample = allf[allf["event_timestamp"] >= pd.Timestamp("2013-01-03", tz="UTC")].sample(1500, random_state=2)
    joined = with_features(sample).merge(sample[["flight_id", "origin", "dep_delay"]], on="flight_id")
    assert (joined[AS_OF] == joined["event_timestamp"] - compute.PREDICTION_LEAD).all()
    assert joined[DEPARTURES].notna().all(), "every as-of finds a congestion row within the TTL"

    step = pd.Timedelta(compute.CONGESTION_GRID)
    grid = joined[["origin"]].assign(event_timestamp=joined[AS_OF].dt.floor(step))
    assert (grid["event_timestamp"] <= joined[AS_OF]).all()
    want = brute_force(allf, grid)
    np.testing.assert_array_equal(joined[DEPARTURES].to_numpy("float64"), want[DEPARTURES].to_numpy("float64"))
    np.testing.assert_allclose(joined[MEAN_DELAY].to_numpy("float64"), want[MEAN_DELAY].to_numpy("float64"),
                               rtol=1e-5, atol=1e-4)
    # The direct reading of "no future": never more than the departures that had left by the as-of time.
    left = departed(allf)
    for origin, f in joined.groupby("origin"):
        dep_at = naive(left.loc[left["origin"] == origin, "dep_at"])[None, :]
        lo = naive(grid.loc[f.index, "event_timestamp"] - compute.CONGESTION_WINDOW)[:, None]
        by_as_of = ((dep_at > lo) & (dep_at <= naive(f[AS_OF])[:, None])).sum(axis=1)
        assert (f[DEPARTURES].to_numpy() <= by_as_of).all()
    # The flight itself: it left after its as-of time (so after g), hence it is not in (g - 2 h, g].
    own_dep = joined["event_timestamp"] + pd.to_timedelta(joined["dep_delay"], unit="m")
    assert not (own_dep <= joined[AS_OF]).any()
