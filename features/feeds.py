"""The live feeds: weather observations and origin congestion, pushed to Feast as they become known.

One function per feed takes a DataFrame of feed rows and the feed's clock (the
time the feed is at) and returns a `FeedResult`:

- the batch is validated whole first: a batch with the wrong schema (missing or
  unexpected columns, a timestamp or feature column of the wrong type) is rejected
  whole; otherwise each row is accepted or rejected with a reason (a timestamp in
  the future of the feed's clock, an origin that is not a known airport, a missing
  key). Every row ends accepted or quarantined, like a landing file
  (`features.ingest`): under the storage root's quarantine/ with a `.reason.json`.
- only then are the accepted rows written: first offline, as one part file of the
  view's table (`features.store.write_table`, named by feed, clock and content, so
  a retried push overwrites instead of appending twice), then online through the
  view's push source (`store.push(..., to=PushMode.ONLINE)`).

Why not `PushMode.ONLINE_AND_OFFLINE`: Feast 0.67's duckdb offline store appends
by reading the source path as one parquet file and writing the whole table back
to that path; on our folder-of-parquet sources it fails ("Cannot open file
.../weather_hourly: File exists") after the online write has already been done,
so the push would land half-way. Offline first, then online: the offline table is
the source of truth (materialization rebuilds the online store from it), and a
failed online write is repaired by a retry or the next materialization.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

import storage
from features import compute, names
from features.compute import utc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Feed:
    name: str  # the feed's name in quarantine and part file names
    push_source: str
    view: str
    features: tuple[str, ...]
    created: bool  # the view's source has a `created` column (stamped with the push time)

    @property
    def columns(self) -> list[str]:
        """The feed rows' columns: the entity, the event timestamp and the features."""
        return [names.ORIGIN, "event_timestamp", *self.features]


WEATHER = Feed("weather", names.WEATHER_PUSH, names.WEATHER_VIEW, tuple(names.WEATHER_FEATURES), created=False)
CONGESTION = Feed("congestion", names.CONGESTION_PUSH, names.CONGESTION_VIEW, tuple(names.CONGESTION_FEATURES),
                  created=True)
FEEDS = {f.name: f for f in (WEATHER, CONGESTION)}


@dataclass
class FeedResult:
    feed: str
    clock: str
    rows_in: int = 0
    rows_pushed: int = 0
    rows_quarantined: int = 0
    reason: str | None = None  # set when the whole batch was rejected
    reason_counts: dict = field(default_factory=dict)
    quarantined_at: str | None = None  # the quarantined batch or rows (parquet); its reason beside it
    offline_part: str | None = None  # the offline part file the accepted rows were written to


@dataclass
class Checked:
    """A feed batch after validation, before anything is written."""

    accepted: pd.DataFrame | None = None  # typed feed rows
    rejected: pd.DataFrame | None = None  # the input rows plus a `reason` column
    batch_error: str | None = None


def schema_problem(feed: Feed, df: pd.DataFrame) -> str | None:
    """Why the batch's schema is wrong (the whole batch is rejected), or None."""
    cols = list(df.columns)
    missing = [c for c in feed.columns if c not in cols]
    unexpected = [c for c in cols if c not in feed.columns]
    if missing or unexpected:
        return (f"schema: the {feed.name} feed expects columns {feed.columns}; "
                f"missing {missing}, unexpected {unexpected}")
    if not pd.api.types.is_datetime64_any_dtype(df["event_timestamp"]):
        return f"schema: event_timestamp has type {df['event_timestamp'].dtype}, expected a timestamp"
    wrong = {c: str(df[c].dtype) for c in feed.features
             if not (pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]))
             and not df[c].isna().all()}
    if wrong:
        return f"schema: feature columns must be numeric; got {wrong}"
    if not (pd.api.types.is_string_dtype(df[names.ORIGIN]) or pd.api.types.is_object_dtype(df[names.ORIGIN])):
        return f"schema: {names.ORIGIN} has type {df[names.ORIGIN].dtype}, expected a string"
    return None


def check(feed: Feed, df: pd.DataFrame, clock: pd.Timestamp) -> Checked:
    """Validate a feed batch against its schema and the feed's clock. Pure: nothing is written."""
    problem = schema_problem(feed, df)
    if problem:
        return Checked(batch_error=problem)
    ts = df["event_timestamp"]
    ts = (ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")).astype(compute.TS)
    origin = df[names.ORIGIN]
    reasons = pd.Series([[] for _ in range(len(df))], index=df.index, dtype=object)

    def flag(mask: pd.Series, text) -> None:
        for idx in mask[mask].index:
            reasons[idx].append(text(idx))

    flag(origin.isna(), lambda i: f"key: {names.ORIGIN} is missing")
    flag(ts.isna(), lambda i: "key: event_timestamp is missing")
    flag(origin.notna() & ~origin.isin(names.ORIGINS),
         lambda i: f"unknown entity: {names.ORIGIN} {origin[i]!r} is not a known airport {list(names.ORIGINS)}")
    flag(ts.notna() & (ts > clock),
         lambda i: f"future: event_timestamp {ts[i].isoformat()} is after the feed clock {clock.isoformat()}")
    bad = reasons.map(bool)
    rejected = df[bad].copy()
    rejected["reason"] = reasons[bad].map("; ".join)
    accepted = pd.DataFrame({names.ORIGIN: origin[~bad].astype(str), "event_timestamp": ts[~bad]})
    for col in feed.features:
        accepted[col] = pd.to_numeric(df.loc[~bad, col], errors="coerce").astype("float32")
    return Checked(accepted=accepted.reset_index(drop=True), rejected=rejected)


def _digest(df: pd.DataFrame) -> str:
    try:
        data = pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()
        data += ",".join(map(str, df.columns)).encode()
    except TypeError:  # unhashable cells in a malformed batch
        data = df.to_json(date_format="iso", default_handler=str).encode()
    return hashlib.sha256(data).hexdigest()[:12]


def _quarantine(feed: Feed, clock: pd.Timestamp, stem: str, rows: pd.DataFrame, record: dict) -> str:
    from features.ingest import _writable  # rejected rows may hold mixed types

    store = storage.get()
    url = store.url("quarantine", f"{stem}.parquet")
    store.write_parquet(url, _writable(rows))
    store.write_json(url + ".reason.json", {"feed": feed.name, "feed_clock": clock.isoformat(), **record,
                                            "quarantined_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return url


def reason_counts(reasons: pd.Series) -> dict[str, int]:
    counts: dict[str, int] = {}
    for text in reasons:
        for part in text.split("; "):
            key = part.split(":", 1)[0]
            counts[key] = counts.get(key, 0) + 1
    return counts


def push(feed: Feed, df: pd.DataFrame, clock, store=None) -> FeedResult:
    """Validate the whole batch, quarantine what is rejected, then write the accepted rows offline and online."""
    clock = utc(clock)
    result = FeedResult(feed=feed.name, clock=clock.isoformat(), rows_in=len(df))
    stem = f"feed_{feed.name}__{clock:%Y%m%dT%H%M%S}__{_digest(df)}"
    checked = check(feed, df, clock)
    if checked.batch_error:
        result.reason, result.rows_quarantined = checked.batch_error, len(df)
        result.quarantined_at = _quarantine(feed, clock, stem, df, {
            "rows_in": len(df), "rows_quarantined": len(df), "reason": checked.batch_error})
        log.warning("%s feed at %s: batch of %d rows rejected (%s)", feed.name, clock, len(df), checked.batch_error)
        return result
    if len(checked.rejected):
        result.rows_quarantined = len(checked.rejected)
        result.reason_counts = reason_counts(checked.rejected["reason"])
        result.quarantined_at = _quarantine(feed, clock, stem + ".rows", checked.rejected, {
            "rows_in": len(df), "rows_quarantined": len(checked.rejected), "reason_counts": result.reason_counts,
            "reason": "rows failed validation; each row's reason is in its `reason` column"})
    rows = checked.accepted
    if not rows.empty:
        if feed.created:
            rows["created"] = pd.Timestamp(datetime.now(timezone.utc))
            rows["created"] = rows["created"].astype(compute.TS)
        from feast.data_source import PushMode

        from features.store import feature_store, write_table

        result.offline_part = str(write_table(feed.view, stem, rows))
        (store or feature_store()).push(feed.push_source, rows, to=PushMode.ONLINE)
        result.rows_pushed = len(rows)
    log.info("%s feed at %s: rows in %d = pushed %d + quarantined %d", feed.name, clock, result.rows_in,
             result.rows_pushed, result.rows_quarantined)
    return result


def push_weather(df: pd.DataFrame, clock, store=None) -> FeedResult:
    """Push hourly weather observations (`features.compute.weather_rows`: stamped when observed, H:51)."""
    return push(WEATHER, df, clock, store)


def push_congestion(df: pd.DataFrame, clock, store=None) -> FeedResult:
    """Push origin congestion rows (`congestion_feed_rows`, or `features.compute.congestion_at`)."""
    return push(CONGESTION, df, clock, store)


# -- what a feed at `clock` has to push: for the replay and the tests ----------------------------
def weather_feed_rows(weather: pd.DataFrame, since, clock) -> pd.DataFrame:
    """The weather rows (`compute.weather_rows`) observed in (since, clock]."""
    ts = weather["event_timestamp"]
    return weather[(ts > utc(since)) & (ts <= utc(clock))][WEATHER.columns].reset_index(drop=True)


def congestion_feed_rows(flights: pd.DataFrame, since, clock, origins=names.ORIGINS) -> pd.DataFrame:
    """The congestion rows of the grid points in (since, clock], from flight rows (`compute.flight_rows`).

    A grid point t only counts departures at or before t, so the rows use nothing
    the feed could not know at `clock` (schedules are published in advance).
    """
    points = compute.congestion_grid(utc(since), utc(clock), origins)
    points = points[points["event_timestamp"] > utc(since)]
    return compute.congestion_at(flights, points)[CONGESTION.columns].reset_index(drop=True)
