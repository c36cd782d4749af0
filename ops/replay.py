"""The replay clock: a month of the world unfolds in event time against the running stack.

    python -m ops.replay --month 2013-07 [--days N] [--speed 3600] [--share 1] [--url URL]

The replay knows the month's truth (the flights with their outcomes, the weather)
and reveals it as its simulated clock advances, the way the world would:

- each hour's weather is pushed when it becomes observable (H:51,
  `features.compute.WEATHER_OBSERVED_AFTER`) through the weather feed;
- each origin's congestion is pushed at every grid point (`CONGESTION_GRID`, 5 min)
  that a request reads, counting only departures that have happened; a point nobody
  reads goes with the next push, at the latest on the hour (`Feeds.at`);
- on the hour, the flights whose outcome became known in the hour that ended are
  delivered through the outcomes feed (`features.feeds.push_outcomes`): the labels
  reach the labelled flight table, where monitoring joins them to served rows, and
  the carrier and route delay rates they move are pushed;
- each flight's prediction request is sent at its as-of time, `PREDICTION_LEAD`
  (1 h) before its scheduled departure, with that exact `as_of`.

Order is exact: a request is sent only after every push stamped at or before its
as-of time, and every push waits for the requests before it to be answered, so a
request never sees a value from its future. The feeds run for `--warmup-hours`
of the previous day before the first request (a live system's feeds were running
before anyone asked), and after the last request until every requested flight's
outcome is delivered. `--speed` is simulated seconds per real second for the
requested window (warm-up and drain run at full speed); `--speed 0` never sleeps.

A progress line shows the simulated time, requests sent, errors and the share
of answers whose features were all fresh (no view stale at the as-of time); the
summary gives latency percentiles, freshness per view and push rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import pandas as pd

import settings

PROGRESS_WIDTH = 30


# -- the world the replay reveals ----------------------------------------------------------------
@dataclass
class World:
    flights_raw: pd.DataFrame  # landing-file rows (what the outcomes feed delivers)
    flights: pd.DataFrame  # compute.flight_rows of the same rows, same index
    weather: pd.DataFrame  # compute.weather_rows: stamped when observed


def month_start(month: str) -> pd.Timestamp:
    """Local midnight of the month's first day, in UTC (the samples hold local months)."""
    from features.compute import LOCAL_TZ

    return pd.Timestamp(f"{month}-01", tz=LOCAL_TZ).tz_convert("UTC")


def previous_month(month: str) -> str:
    return (pd.Period(month, freq="M") - 1).strftime("%Y-%m")


def load_world(month: str) -> World:
    """The month's flights and weather, with the previous month's (for the warm-up) when there is one."""
    from features import compute, samples

    samples.export()
    frames = {}
    for kind in ("flights", "weather"):
        paths = [samples.sample_path(kind, m) for m in (previous_month(month), month)]
        if not paths[1].exists():
            raise SystemExit(f"no {kind} sample for {month}: expected {paths[1]}")
        frames[kind] = pd.concat([pd.read_parquet(p) for p in paths if p.exists()], ignore_index=True)
    raw = frames["flights"]
    return World(flights_raw=raw, flights=compute.flight_rows(raw, "replay"),
                 weather=compute.weather_rows(frames["weather"]))


def asked_about(flight_ids: pd.Series, share: float) -> pd.Series:
    """Which flights someone asks about: a stable hash of the flight id under `share` (1: every flight).

    The feeds still deliver every flight's outcome; only the requests are sampled."""
    if share >= 1:
        return pd.Series(True, index=flight_ids.index)
    hashed = pd.util.hash_pandas_object(flight_ids.astype(str), index=False).to_numpy()
    return pd.Series(hashed % 10_000 < share * 10_000, index=flight_ids.index)


def requests_between(world: World, start: pd.Timestamp, end: pd.Timestamp, limit: int | None = None,
                     share: float = 1.0) -> pd.DataFrame:
    """The flights asked about in [start, end): flight rows plus `as_of`, in as-of order."""
    from features.compute import as_of

    f = world.flights.assign(as_of=as_of(world.flights["event_timestamp"]))
    f = f[(f["as_of"] >= start) & (f["as_of"] < end) & asked_about(f["flight_id"], share)]
    f = f.sort_values(["as_of", "flight_id"], kind="stable")
    return f.head(limit) if limit else f


def breakpoints(start: pd.Timestamp, end: pd.Timestamp) -> list[pd.Timestamp]:
    """The times in (start, end] at which a feed pushes: every congestion grid point and every H:51."""
    from features.compute import CONGESTION_GRID, WEATHER_OBSERVED_AFTER

    grid = pd.date_range(start.ceil(CONGESTION_GRID), end, freq=CONGESTION_GRID)
    weather = pd.date_range(start.floor("h") + WEATHER_OBSERVED_AFTER, end, freq="h")
    points = grid.union(weather)
    return list(points[points > start])


def congestion_read(point: pd.Timestamp, next_request: pd.Timestamp | None, start: pd.Timestamp,
                    end: pd.Timestamp, grid: pd.Timedelta) -> bool:
    """Whether a request reads the congestion of grid point `point` before the next one, so that it must be
    pushed now (`Feeds.at`'s `read`): the next request (as of `next_request`, None when none is left) comes
    before the next grid point, or `point` is the window's first point (the last of the warm-up) or its last."""
    if point <= start:
        return point + grid > start
    return (next_request is not None and next_request < point + grid) or point + grid > end


# -- the feeds, driven by the clock --------------------------------------------------------------
@dataclass
class FeedCounts:
    weather: int = 0
    congestion: int = 0
    outcomes: int = 0
    delay_rates: int = 0
    quarantined: int = 0
    pushes: int = 0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return self.weather + self.congestion + self.outcomes + self.delay_rates


class Feeds:
    """Pushes what became known at each breakpoint; remembers how far each feed has got."""

    def __init__(self, world: World, since: pd.Timestamp, store=None):
        from features.compute import CONGESTION_GRID

        from features.store import feature_store

        self.world, self.store = world, store or feature_store()
        self.grid = pd.Timedelta(CONGESTION_GRID)
        self.weather_since = self.outcomes_since = self.congestion_since = since
        self.outcome_at = world.flights["outcome_at"]
        # The flights a congestion point can count: scheduled up to the schedule window after it (or
        # later, if they left that much early), and late enough before it to depart inside its window
        # even at the month's longest delay.
        from features.compute import CONGESTION_WINDOW, SCHEDULE_HALF_WINDOW

        self.by_schedule = world.flights.sort_values("event_timestamp", kind="stable")
        delays = world.flights["dep_delay"]
        self.lookback = CONGESTION_WINDOW + pd.Timedelta(minutes=float(delays.max()) + 1)
        self.lookahead = max(SCHEDULE_HALF_WINDOW, pd.Timedelta(minutes=-float(min(delays.min(), 0)))) \
            + pd.Timedelta(minutes=1)
        self.congestion_chunk = pd.Timedelta(days=1)
        self._congestion: pd.DataFrame | None = None
        self._congestion_since = self._congestion_until = since
        self.counts = FeedCounts()

    def congestion_rows(self, since: pd.Timestamp, clock: pd.Timestamp) -> pd.DataFrame:
        """The congestion rows of the grid points in (since, clock], in time order.

        Computed a day of grid points at a time and sliced: a point's row depends only on
        the flights around it, so a day computed at once gives each point the row it gets
        alone, at a fraction of the cost of one `congestion_at` per push.
        """
        from features import feeds

        if self._congestion is None or since < self._congestion_since or clock > self._congestion_until:
            until = max(clock, since + self.congestion_chunk)
            sched = self.by_schedule["event_timestamp"]
            lo = sched.searchsorted(since - self.lookback)
            hi = sched.searchsorted(until + self.lookahead, side="right")
            rows = feeds.congestion_feed_rows(self.by_schedule.iloc[lo:hi], since, until)
            self._congestion = rows.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
            self._congestion_since, self._congestion_until = since, until
        ts = self._congestion["event_timestamp"]
        return self._congestion[(ts > since) & (ts <= clock)].reset_index(drop=True)

    def at(self, clock: pd.Timestamp, live: bool = True, read: bool = True) -> None:
        """The pushes due at `clock`; with `live=False` (draining) only the outcomes.

        `read=False` says no request reads congestion before the next grid point: its push
        then waits for the next one that is read, or for the hour, and carries every grid
        point since (the online store ends the same for every reader; the offline table
        holds every point at least once an hour, so each delivered label's congestion is
        there before it).
        """
        from features import feeds

        t0 = time.perf_counter()
        results = []
        if live and clock.minute == 51:
            rows = feeds.weather_feed_rows(self.world.weather, self.weather_since, clock)
            self.weather_since = clock
            if len(rows):
                results.append(feeds.push_weather(rows, clock, self.store))
                self.counts.weather += results[-1].rows_pushed
        if live and clock == clock.floor(self.grid) and (read or clock == clock.floor("h")):
            results += self._congestion_push(clock)
        if clock == clock.floor("h"):
            results += self._outcomes(clock)
        self._tally(results, t0)

    def settle(self, clock: pd.Timestamp) -> None:
        """Push the congestion grid points up to `clock` that waited for a reader (see `at`)."""
        clock = clock.floor(self.grid)
        if clock > self.congestion_since:
            t0 = time.perf_counter()
            self._tally(self._congestion_push(clock), t0)

    def _congestion_push(self, clock: pd.Timestamp) -> list:
        from features import feeds

        rows = self.congestion_rows(self.congestion_since, clock)
        self.congestion_since = clock
        if not len(rows):
            return []
        result = feeds.push_congestion(rows, clock, self.store)
        self.counts.congestion += result.rows_pushed
        return [result]

    def catch_up(self, clock: pd.Timestamp) -> None:
        """Everything due in (since, `clock`] in one push per feed, `clock` on the hour.

        The offline tables get the rows pushing at every breakpoint would have written, and
        the online store ends as it would be at `clock`. Only for a stretch nobody asks
        about: a request in between would read values from its future.
        """
        from features import feeds

        if clock != clock.floor("h"):
            raise ValueError(f"a catch-up ends on the hour (the delay rates are hourly), not at {clock}")
        t0 = time.perf_counter()
        results = []
        rows = feeds.weather_feed_rows(self.world.weather, self.weather_since, clock)
        self.weather_since = clock
        if len(rows):
            results.append(feeds.push_weather(rows.sort_values("event_timestamp", kind="stable"), clock, self.store))
            self.counts.weather += results[-1].rows_pushed
        results += self._congestion_push(clock)
        results += self._outcomes(clock)
        self._tally(results, t0)

    def _outcomes(self, clock: pd.Timestamp) -> list:
        from features import feeds

        known = (self.outcome_at > self.outcomes_since) & (self.outcome_at <= clock)
        self.outcomes_since = clock
        if not known.any():
            return []
        result = feeds.push_outcomes(self.world.flights_raw[known.to_numpy()], clock, self.store)
        self.counts.outcomes += result.rows_pushed
        self.counts.delay_rates += sum(result.derived.values())
        return [result]

    def _tally(self, results: list, t0: float) -> None:
        self.counts.quarantined += sum(r.rows_quarantined for r in results)
        self.counts.pushes += len(results)
        self.counts.seconds += time.perf_counter() - t0


# -- requests ----------------------------------------------------------------------------------
def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Tally:
    total: int
    done: int = 0
    fresh: int = 0  # answers with no stale view
    latencies_ms: list[float] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)  # wall-clock time of each answer (epoch s)
    errors: Counter = field(default_factory=Counter)
    stale_views: Counter = field(default_factory=Counter)
    versions: Counter = field(default_factory=Counter)

    def ok(self, ms: float, answer: dict) -> None:
        self.done += 1
        self.latencies_ms.append(ms)
        self.answered_at.append(time.time())
        stale = answer.get("stale_views") or []
        self.fresh += not stale
        self.stale_views.update(stale)
        self.versions[str(answer.get("model_version"))] += 1

    def failed(self, kind: str) -> None:
        self.done += 1
        self.errors[kind] += 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def answered(self) -> int:
        return len(self.latencies_ms)


class Progress:
    """One line on stderr: redrawn in place on a terminal, a line per 10% of requests otherwise."""

    def __init__(self, tally: Tally, stream=None):
        self.tally, self.stream = tally, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self.clock: pd.Timestamp | None = None

    def line(self) -> str:
        t = self.tally
        frac = t.done / t.total if t.total else 1.0
        filled = int(frac * PROGRESS_WIDTH)
        fresh = f"{100 * t.fresh / t.answered:5.1f}%" if t.answered else "  -  "
        clock = f"{self.clock:%Y-%m-%d %H:%M}Z" if self.clock is not None else "-"
        return (f"[{'#' * filled}{'.' * (PROGRESS_WIDTH - filled)}] {clock} requests {t.done}/{t.total} "
                f"errors {t.error_count} fresh {fresh}")

    def update(self, clock: pd.Timestamp | None = None, final: bool = False) -> None:
        if clock is not None:
            self.clock = clock
        now = time.monotonic()
        decile = int(10 * self.tally.done / self.tally.total) if self.tally.total else 10
        if self.tty and (final or now - self._last_draw >= 0.2):
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
            self._last_draw = now
        elif not self.tty and (final or decile > self._last_decile):
            self.stream.write(self.line() + "\n")
            self._last_decile = decile
        self.stream.flush()


async def _send(client, url: str, body: dict, tally: Tally) -> None:
    import httpx

    t0 = time.perf_counter()
    try:
        resp = await client.post(url, json=body)
    except httpx.HTTPError as exc:
        tally.failed(type(exc).__name__)
        return
    if resp.is_success:
        tally.ok((time.perf_counter() - t0) * 1000, resp.json())
    else:
        tally.failed(f"HTTP {resp.status_code}")


@dataclass
class ReplayResult:
    month: str
    start: str
    end: str
    requests: int
    answered: int
    errors: dict
    fresh_share: float
    stale_views: dict
    versions: dict
    p50_ms: float
    p99_ms: float
    seconds: float
    requests_per_second: float
    feed_rows: dict
    feed_rows_per_second: float
    last_outcome: str | None
    latencies: list = field(default_factory=list, repr=False)  # [(answered at, epoch s; latency ms)]

    def summary(self) -> str:
        errors = ", ".join(f"{k}: {n}" for k, n in self.errors.items()) or "none"
        stale = ", ".join(f"{k} {n}" for k, n in self.stale_views.items()) or "none"
        f = self.feed_rows
        return "\n".join([
            f"replayed {self.start} .. {self.end}: {self.requests} requests in {self.seconds:.1f}s "
            f"({self.requests_per_second:.1f} req/s)",
            f"answered {self.answered}, errors {sum(self.errors.values())} ({errors}); "
            f"latency p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms",
            f"fresh features on {100 * self.fresh_share:.2f}% of answers; stale views: {stale}",
            f"pushed {f['weather']} weather, {f['congestion']} congestion, {f['outcomes']} outcome and "
            f"{f['delay_rates']} delay-rate rows ({self.feed_rows_per_second:.0f} rows/s of push time), "
            f"{f['quarantined']} quarantined; outcomes delivered up to {self.last_outcome}",
        ])


async def replay(world: World, month: str, start: pd.Timestamp, end: pd.Timestamp, url: str, speed: float,
                 warmup: pd.Timedelta, concurrency: int = 8, limit: int | None = None, timeout: float = 10.0,
                 store=None, stream=None, share: float = 1.0, stop=None) -> ReplayResult:
    """Walk the clock from `start - warmup` until every requested flight's outcome is delivered,
    or until `stop` (a `threading.Event`) is set: then it ends at the next push, without the drain."""
    import httpx

    from serving.client import flight_table_body

    asked = requests_between(world, start, end, limit, share)
    last_request = asked["as_of"].max() if len(asked) else start
    drain_to = max(asked["outcome_at"].max().ceil("h") if len(asked) else end, end)
    feeds = Feeds(world, since=start - warmup, store=store)
    tally = Tally(total=len(asked))
    progress = Progress(tally, stream)
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    bodies = [flight_table_body(row, as_of=row["as_of"]) for _, row in asked.iterrows()]
    times = asked["as_of"].tolist()
    t_start = time.monotonic()

    async def until(t: pd.Timestamp) -> None:
        if speed > 0 and t >= start:
            delay = (t - start).total_seconds() / speed - (time.monotonic() - t_real0)
            if delay > 0:
                await asyncio.sleep(delay)

    async def one(body: dict) -> None:
        try:
            await _send(client, target, body, tally)
        finally:
            slots.release()
            progress.update()

    target = f"{url.rstrip('/')}/predict"
    t_real0 = time.monotonic()
    i = 0
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        for point in breakpoints(start - warmup, drain_to):
            if point <= start:  # nobody asks before the window: the hour and the window's first point push
                feeds.at(point, read=congestion_read(point, None, start, end, feeds.grid))
                t_real0 = time.monotonic()  # the paced window starts after the warm-up
                continue
            if stop is not None and stop.is_set():
                end = min(end, point)
                feeds.settle(end - pd.Timedelta(microseconds=1))  # the points before `point` nobody read yet
                break
            pending = []
            while i < len(times) and times[i] < point:
                await until(times[i])
                await slots.acquire()
                pending.append(asyncio.create_task(one(bodies[i])))
                i += 1
            await asyncio.gather(*pending)
            await until(min(point, last_request))
            next_request = times[i] if i < len(times) else None
            feeds.at(point, live=point <= end, read=congestion_read(point, next_request, start, end, feeds.grid))
            progress.update(clock=point)
    progress.update(final=True)
    seconds = time.monotonic() - t_start
    lat = sorted(tally.latencies_ms)
    counts = asdict(feeds.counts)
    return ReplayResult(
        month=month, start=start.isoformat(), end=end.isoformat(), requests=tally.total, answered=tally.answered,
        errors=dict(tally.errors.most_common()), fresh_share=tally.fresh / tally.answered if tally.answered else 0.0,
        stale_views=dict(tally.stale_views.most_common()), versions=dict(tally.versions),
        p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99), seconds=seconds,
        requests_per_second=tally.total / max(seconds, 1e-9), feed_rows=counts,
        feed_rows_per_second=feeds.counts.rows / max(feeds.counts.seconds, 1e-9),
        last_outcome=feeds.outcomes_since.isoformat(),
        latencies=list(zip(tally.answered_at, tally.latencies_ms)),
    )


@dataclass
class FastForward:
    month: str
    start: str
    end: str
    seconds: float
    feed_rows: dict
    last_outcome: str

    def summary(self) -> str:
        f = self.feed_rows
        return (f"{self.start[:16]}..{self.end[:16]} in {self.seconds:.1f}s: {f['weather']} weather, "
                f"{f['congestion']} congestion, {f['outcomes']} outcome and {f['delay_rates']} delay-rate rows in "
                f"{f['pushes']} pushes, {f['quarantined']} quarantined, no requests")


def fast_forward(month: str, from_day: float, to_day: float, outcomes_since: str | None = None,
                 step_hours: float = 24.0, store=None) -> FastForward:
    """The feeds alone from day `from_day` to day `to_day` of `month`, `step_hours` per push, nobody asking.

    What a stretch of the live replay would have left in the feature store (every
    feed row, every outcome), without its thousands of pushes: what the demo uses to
    let labels for weeks of flights arrive in seconds. Both days must fall on the hour;
    `outcomes_since` is where an earlier replay's outcomes stopped (its drain goes on
    past its last request). Resume with `run(..., from_day=to_day, warmup_hours=0)`.
    """
    start = month_start(month) + pd.Timedelta(days=from_day)
    end = month_start(month) + pd.Timedelta(days=to_day)
    if start != start.floor("h") or end != end.floor("h") or end <= start:
        raise ValueError(f"a fast-forward runs between two hours, forwards: {start} .. {end}")
    feeds = Feeds(load_world(month), since=start, store=store)
    if outcomes_since is not None:
        feeds.outcomes_since = pd.Timestamp(outcomes_since)
    t0 = time.monotonic()
    clock = start
    while clock < end:
        clock = min(clock + pd.Timedelta(hours=step_hours), end).floor("h")
        feeds.catch_up(clock)
    return FastForward(month=month, start=start.isoformat(), end=end.isoformat(), seconds=time.monotonic() - t0,
                       feed_rows=asdict(feeds.counts), last_outcome=feeds.outcomes_since.isoformat())


def run(month: str, days: float | None = None, speed: float = 3600.0, warmup_hours: float = 24.0,
        url: str | None = None, concurrency: int = 8, limit: int | None = None, stream=None,
        share: float = 1.0, from_day: float = 0.0, stop=None) -> ReplayResult:
    """Replay `days` of `month` from its day `from_day` (a continuation: pass `warmup_hours=0`, the feeds
    are already there). `stop`, a `threading.Event`, ends it early."""
    world = load_world(month)
    start = month_start(month) + pd.Timedelta(days=from_day)
    month_end = month_start((pd.Period(month, freq="M") + 1).strftime("%Y-%m"))
    end = min(start + pd.Timedelta(days=days), month_end) if days else month_end
    url = url or settings.get().model_server_url
    print(f"replaying {month} from {start:%Y-%m-%d %H:%M}Z to {end:%Y-%m-%d %H:%M}Z against {url} "
          f"at {'full speed' if speed <= 0 else f'{speed:g}x'}", file=stream or sys.stderr)
    return asyncio.run(replay(world, month, start, end, url, speed, pd.Timedelta(hours=warmup_hours),
                              concurrency=concurrency, limit=limit, stream=stream, share=share, stop=stop))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--month", required=True, help="YYYY-MM, for example 2013-07")
    parser.add_argument("--days", type=float, default=None, help="replay only the first N days (default: all)")
    parser.add_argument("--speed", type=float, default=3600.0,
                        help="simulated seconds per real second (default 3600: an hour a second); 0 = no sleeping")
    parser.add_argument("--warmup-hours", type=float, default=24.0, help="feeds only, before the first request")
    parser.add_argument("--limit", type=int, default=None, help="send only the first N requests")
    parser.add_argument("--share", type=float, default=1.0,
                        help="ask about this share of the flights, by a stable hash of the flight id (default 1)")
    parser.add_argument("--url", default=None, help="model server base URL (default: settings)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at most (default 8)")
    parser.add_argument("--max-error-rate", type=float, default=0.01,
                        help="exit 1 when more than this share of requests fail (default 0.01)")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args(argv)
    if args.speed < 0 or args.concurrency <= 0:
        parser.error("--speed must be >= 0 and --concurrency positive")
    result = run(args.month, args.days, args.speed, args.warmup_hours, args.url, args.concurrency, args.limit,
                 share=args.share)
    print(result.summary())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(asdict(result), fh, indent=2, default=str)
    errors = sum(result.errors.values())
    if result.requests and errors / result.requests > args.max_error_rate:
        print(f"too many errors: {errors}/{result.requests} > {args.max_error_rate:.1%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
