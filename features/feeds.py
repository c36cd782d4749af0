"""The live feeds: weather, origin congestion and flight outcomes, pushed to Feast as they become known.

One function per feed takes a DataFrame of feed rows and the feed's clock (the
time the feed is at) and returns a `FeedResult`:

- the batch is validated whole first: a batch with the wrong schema (missing or
  unexpected columns, a timestamp or feature column of the wrong type) is rejected
  whole; otherwise each row is accepted or rejected with a reason (a timestamp in
  the future of the feed's clock, an origin that is not a known airport, a missing
  key). Every row ends accepted or quarantined, like a landing file
  (`features.ingest`): under the storage root's quarantine/ with a `.reason.json`.
- only then are the accepted rows written: first offline, into the view's part
  file of the feed's day (`feed_<feed>__<YYYYMMDD>`: read, merged on the row's key,
  written back atomically, so a retried push changes nothing and a month of hourly
  pushes makes 31 files, not 744), then online through the view's push source
  (`store.push(..., to=PushMode.ONLINE)`).

The outcomes feed (`push_outcomes`) delivers arrived flights, the labels: its rows
are flights rows as a landing file holds them, checked by the landing validation
(`features.validation.validate_frame`) plus "no outcome after the feed's clock".
Accepted flights go to the labelled flight table (training's entity rows and
monitoring's labels), and the carrier and route delay rates they change are
computed as dataops computes them (`features.compute.delay_stats`) and pushed.

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
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

import storage
from features import compute, names
from features.compute import utc
from features.store import FLIGHTS_TABLE

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
    derived: dict = field(default_factory=dict)  # outcomes: view -> delay-rate rows pushed


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


CLOCK_FORMAT = "%Y%m%dT%H%M%S"


def batch_id(feed: Feed, clock: pd.Timestamp, df: pd.DataFrame) -> str:
    """A feed batch's id: `feed_<feed>__<clock>__<content hash>`. It names the batch's quarantine
    records and is the `batch_id` of the flights the outcomes feed delivers (`compute.flight_rows`)."""
    return f"feed_{feed.name}__{clock:{CLOCK_FORMAT}}__{_digest(df)}"


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


def _quarantine_rejected(feed: Feed, clock: pd.Timestamp, stem: str, rejected: pd.DataFrame, rows_in: int,
                         result: FeedResult) -> None:
    if not len(rejected):
        return
    result.rows_quarantined = len(rejected)
    result.reason_counts = reason_counts(rejected["reason"])
    result.quarantined_at = _quarantine(feed, clock, stem + ".rows", rejected, {
        "rows_in": rows_in, "rows_quarantined": len(rejected), "reason_counts": result.reason_counts,
        "reason": "rows failed validation; each row's reason is in its `reason` column"})


def _reject_whole(feed: Feed, clock: pd.Timestamp, stem: str, df: pd.DataFrame, reason: str,
                  result: FeedResult) -> FeedResult:
    result.reason, result.rows_quarantined = reason, len(df)
    result.quarantined_at = _quarantine(feed, clock, stem, df, {
        "rows_in": len(df), "rows_quarantined": len(df), "reason": reason})
    log.warning("%s feed at %s: batch of %d rows rejected (%s)", feed.name, clock, len(df), reason)
    return result


def write_day_part(view: str, feed: str, clock: pd.Timestamp, rows: pd.DataFrame, keys: list[str]) -> str:
    """Merge `rows` into the feed's part file of `clock`'s day of the view's offline table, on `keys`."""
    from features.store import table_dir, write_table

    part = f"feed_{feed}__{clock:%Y%m%d}"
    path = table_dir(view) / f"{part}.parquet"
    if path.exists():
        rows = pd.concat([pd.read_parquet(path), rows], ignore_index=True)
        rows = rows.drop_duplicates(keys, keep="last").reset_index(drop=True)
    return str(write_table(view, part, rows))


_VIEWS_OF_PUSH: dict[tuple[int, str], list] = {}  # (id of the store, push source) -> the views it feeds


def _push_online(store, push_source: str, rows: pd.DataFrame) -> None:
    """`store.push(push_source, rows, to=PushMode.ONLINE)`, without its per-call registry walk.

    Feast's push looks the push source's views up in the registry twice per call
    (about 100 ms of proto parsing here, against 15 ms for the write), which a feed
    pushing every five simulated minutes cannot afford; the views are looked up
    once per store and handed to the provider's `ingest_df`, which is what
    `write_to_online_store` calls. Like Feast, a frame whose features are all
    missing is not written.
    """
    from features.store import feature_store

    store = store or feature_store()
    key = (id(store), push_source)
    if key not in _VIEWS_OF_PUSH:
        _VIEWS_OF_PUSH[key] = [fv for fv in store.list_feature_views()
                               if fv.stream_source is not None and fv.stream_source.name == push_source]
        if not _VIEWS_OF_PUSH[key]:
            raise ValueError(f"no feature view is fed by the push source {push_source!r}")
    for view in _VIEWS_OF_PUSH[key]:
        features = [f.name for f in view.features]
        if rows[features].isna().all().all():
            continue
        store._get_provider().ingest_df(view, rows)


def push(feed: Feed, df: pd.DataFrame, clock, store=None) -> FeedResult:
    """Validate the whole batch, quarantine what is rejected, then write the accepted rows offline and online."""
    clock = utc(clock)
    result = FeedResult(feed=feed.name, clock=clock.isoformat(), rows_in=len(df))
    stem = batch_id(feed, clock, df)
    checked = check(feed, df, clock)
    if checked.batch_error:
        return _reject_whole(feed, clock, stem, df, checked.batch_error, result)
    _quarantine_rejected(feed, clock, stem, checked.rejected, len(df), result)
    rows = checked.accepted
    if not rows.empty:
        if feed.created:
            rows["created"] = pd.Timestamp(datetime.now(timezone.utc))
            rows["created"] = rows["created"].astype(compute.TS)
        result.offline_part = write_day_part(feed.view, feed.name, clock, rows, [names.ORIGIN, "event_timestamp"])
        _push_online(store, feed.push_source, rows)
        result.rows_pushed = len(rows)
    log.info("%s feed at %s: rows in %d = pushed %d + quarantined %d", feed.name, clock, result.rows_in,
             result.rows_pushed, result.rows_quarantined)
    return result


OUTCOMES = Feed("outcomes", push_source="", view=FLIGHTS_TABLE, features=(), created=False)  # see push_outcomes


def push_outcomes(flights: pd.DataFrame, clock, store=None) -> FeedResult:
    """Deliver arrived flights (landing-file flights rows): labels offline, the delay rates they move online.

    A row is rejected with the landing validation's reasons, or when its outcome
    (`compute.flight_rows`' `outcome_at`) is after the clock. A delay-rate row is
    pushed only once its hour is over (stamped at or before the clock); the feed is
    meant to run on the hour with the outcomes of the hour that ended, which gives
    exactly the rows a dataops batch of the same flights would write.
    """
    from features import validation
    from features.store import read_offline_table

    clock = utc(clock)
    result = FeedResult(feed=OUTCOMES.name, clock=clock.isoformat(), rows_in=len(flights))
    stem = batch_id(OUTCOMES, clock, flights)
    checked = validation.validate_frame(stem, flights, now=clock)
    if checked.file_error or checked.kind != "flights":
        reason = checked.file_error or f"schema: the outcomes feed takes flights rows, got {checked.kind} rows"
        return _reject_whole(OUTCOMES, clock, stem, flights, reason, result)
    rejected = checked.rejected
    rows = compute.flight_rows(checked.accepted, stem) if checked.rows_accepted else None
    if rows is not None:
        future = rows["outcome_at"] > clock
        if future.any():
            late = checked.accepted[future.to_numpy()].copy()
            late["reason"] = [f"future: the outcome at {t.isoformat()} is after the feed clock {clock.isoformat()}"
                              for t in rows.loc[future, "outcome_at"]]
            rejected = pd.concat([rejected, late], ignore_index=True)
            rows = rows[~future].reset_index(drop=True)
    _quarantine_rejected(OUTCOMES, clock, stem, rejected, len(flights), result)
    if rows is None or rows.empty:
        return result
    import pyarrow.dataset as ds

    result.offline_part = write_day_part(FLIGHTS_TABLE, OUTCOMES.name, clock, rows, ["flight_id"])
    since = rows["outcome_at"].min() - compute.ROUTE_WINDOW
    history = read_offline_table(FLIGHTS_TABLE, filters=ds.field("outcome_at") >= since.to_pydatetime())
    carrier, route = compute.delay_stats(rows, history, pd.Timestamp(datetime.now(timezone.utc)))
    for view, push_source, key, stats in ((names.CARRIER_VIEW, names.CARRIER_PUSH, names.CARRIER, carrier),
                                          (names.ROUTE_VIEW, names.ROUTE_PUSH, names.ROUTE, route)):
        stats = stats[stats["event_timestamp"] <= clock]
        if not stats.empty:
            write_day_part(view, OUTCOMES.name, clock, stats, [key, "event_timestamp"])
            _push_online(store, push_source, stats)
        result.derived[view] = len(stats)
    result.rows_pushed = len(rows)
    log.info("outcomes feed at %s: flights in %d = delivered %d + quarantined %d; pushed %s", clock,
             result.rows_in, result.rows_pushed, result.rows_quarantined, result.derived)
    return result


def push_weather(df: pd.DataFrame, clock, store=None) -> FeedResult:
    """Push hourly weather observations (`features.compute.weather_rows`: stamped when observed, H:51)."""
    return push(WEATHER, df, clock, store)


def push_congestion(df: pd.DataFrame, clock, store=None) -> FeedResult:
    """Push origin congestion rows (`congestion_feed_rows`, or `features.compute.congestion_at`)."""
    return push(CONGESTION, df, clock, store)


# -- lineage: where a feed batch's rows are ---------------------------------------------------------
@dataclass
class FeedTrace:
    """The feed batches among a set of batch ids (a model version's training batches), traced as far as
    they go: a feed batch has no landing file, its rows were pushed, so the trace ends at the part files
    the pushes wrote and the quarantine records of the rows they rejected."""

    feed: str
    batch_ids: list[str]
    first_clock: str  # ISO: the feed's clock at its first and last push among them
    last_clock: str
    part_files: list[str]  # the feed's part files of those days, in every table the feed writes
    rows: dict[str, int] = field(default_factory=dict)  # part file -> rows of these batches (flight table)
    missing_parts: list[str] = field(default_factory=list)  # part files that should exist and do not
    quarantined: list[dict] = field(default_factory=list)  # {"url", "rows_quarantined", "reason"...}


def _feeds() -> dict[str, Feed]:
    return {f.name: f for f in (WEATHER, CONGESTION, OUTCOMES)}


def tables_written(feed: Feed) -> list[str]:
    """The offline tables a feed's pushes write their day's part file into."""
    if feed.name == OUTCOMES.name:
        return [FLIGHTS_TABLE, names.CARRIER_VIEW, names.ROUTE_VIEW]
    return [feed.view]


def parse_batch_id(batch: str) -> tuple[Feed, pd.Timestamp] | None:
    """(the feed, its clock) of a feed batch id (`batch_id`), or None for any other batch (a landing batch)."""
    m = re.fullmatch(r"feed_(?P<feed>[a-z_]+?)__(?P<clock>\d{8}T\d{6})__(?P<hash>[0-9a-f]+)", batch)
    if not m or m["feed"] not in _feeds():
        return None
    return _feeds()[m["feed"]], pd.Timestamp(datetime.strptime(m["clock"], CLOCK_FORMAT), tz="UTC")


def trace(batch_ids: list[str]) -> tuple[list[FeedTrace], list[str]]:
    """The feed batches among `batch_ids`, grouped by feed and traced; and the other (landing) batch ids."""
    from features.store import table_dir

    by_feed: dict[str, list[tuple[pd.Timestamp, str]]] = {}
    others = []
    for b in batch_ids:
        parsed = parse_batch_id(b)
        if parsed is None:
            others.append(b)
        else:
            by_feed.setdefault(parsed[0].name, []).append((parsed[1], b))
    store = storage.get()
    quarantine = {i["url"].rsplit("/", 1)[-1]: i["url"] for i in store.list_files(store.url("quarantine"))}
    traces = []
    for name, batches in sorted(by_feed.items()):
        feed, batches = _feeds()[name], sorted(batches)
        ids = [b for _, b in batches]
        days = sorted({f"{clock:%Y%m%d}" for clock, _ in batches})
        t = FeedTrace(feed=name, batch_ids=ids, first_clock=batches[0][0].isoformat(),
                      last_clock=batches[-1][0].isoformat(), part_files=[])
        for table in tables_written(feed):
            for day in days:
                path = table_dir(table) / f"feed_{name}__{day}.parquet"
                if not path.exists():
                    t.missing_parts.append(str(path))
                    continue
                t.part_files.append(str(path))
                if table == FLIGHTS_TABLE:
                    got = pd.read_parquet(path, columns=["batch_id"])["batch_id"]
                    t.rows[str(path)] = int(got.isin(ids).sum())
        for b in ids:
            for stem in (f"{b}.rows.parquet", f"{b}.parquet"):
                if stem + ".reason.json" in quarantine:
                    record = store.read_json(quarantine[stem + ".reason.json"])
                    t.quarantined.append({"url": quarantine.get(stem, store.url("quarantine", stem)), **record})
        traces.append(t)
    return traces, others


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


def outcome_feed_rows(flights: pd.DataFrame, since, clock) -> pd.DataFrame:
    """The flights (landing-file rows) whose outcome became known in (since, clock]."""
    outcome_at = compute.flight_rows(flights, "").set_index(flights.index)["outcome_at"]
    return flights[(outcome_at > utc(since)) & (outcome_at <= utc(clock))].reset_index(drop=True)
