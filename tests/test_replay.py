"""The replay clock against a stub model server that looks at the online store as each request arrives.

The stub stands in for the model server: what is asserted is what `ops.replay`
pushes and sends, and in what order. At every request the stub reads the real
Feast online store the replay pushes to, so the test sees exactly the world a
server would have seen at that moment.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from features import compute, names
from ops import replay

MONTH = "2013-07"
DAYS = 0.25  # local midnight to 06:00: the first morning's requests (as of 04:00-06:00)


class StubServer:
    """POST /predict: records the body and the online store's timestamps then; 500 for `fail_flights`."""

    def __init__(self, fail_flights: frozenset[int] = frozenset()):
        self.seen: list[dict] = []
        stub = self
        self._local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen = {"body": body, "at": time.monotonic(), **stub.online_stamps(body["origin"])}
                stub.seen.append(seen)
                status = 500 if body.get("flight") in fail_flights else 200
                payload = json.dumps({"probability": 0.2, "prediction": 0, "model_version": "1",
                                      "stale_views": []}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def online_stamps(self, origin: str) -> dict:
        from features.store import feature_store

        if not hasattr(self._local, "store"):
            self._local.store = feature_store()
        refs = [f"{names.WEATHER_VIEW}:temp", f"{names.CONGESTION_VIEW}:{names.CONGESTION_FEATURES[0]}"]
        got = self._local.store.get_online_features(refs, [{names.ORIGIN: origin}]).to_dict(
            include_event_timestamps=True)
        return {"weather_ts": got["temp__ts"][0], "congestion_ts": got[f"{names.CONGESTION_FEATURES[0]}__ts"][0]}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def feast(home, samples_dir):
    from features.store import feature_store

    return feature_store(apply=True)


def test_each_request_sees_the_world_exactly_as_of_its_time_and_every_outcome_is_delivered(feast, capsys):
    with StubServer() as stub:
        result = replay.run(MONTH, days=DAYS, speed=0, warmup_hours=2, url=stub.url)
    _, err = capsys.readouterr()

    world = replay.load_world(MONTH)
    asked = replay.requests_between(world, replay.month_start(MONTH),
                                    replay.month_start(MONTH) + pd.Timedelta(days=DAYS))
    assert result.requests == result.answered == len(asked) == len(stub.seen) > 20
    assert result.errors == {} and result.fresh_share == 1.0
    sent = [pd.Timestamp(s["body"]["as_of"]) for s in stub.seen]
    assert sorted(sent) == list(asked["as_of"])  # each flight once, with its exact as-of time
    # Requests between two pushes may overtake each other; none overtakes a push.
    points = pd.DatetimeIndex(replay.breakpoints(sent[0] - pd.Timedelta(hours=1), sent[-1]))
    between = points.searchsorted(pd.DatetimeIndex(sent), side="right")
    assert list(between) == sorted(between)
    for s, as_of in zip(stub.seen, sent):
        congestion = pd.Timestamp(s["congestion_ts"], unit="s", tz="UTC")
        weather = pd.Timestamp(s["weather_ts"], unit="s", tz="UTC")
        # The newest congestion grid point at or before the as-of time: never a later one, never an older one.
        assert congestion == as_of.floor(compute.CONGESTION_GRID), (as_of, congestion)
        # The newest weather observed by then: observed at or before, at most an hour before.
        assert as_of - pd.Timedelta(hours=1) < weather <= as_of, (as_of, weather)
    # The clock ran on after the last request until every requested flight's outcome was delivered.
    from features.store import read_offline_table

    labelled = set(read_offline_table("flights")["flight_id"])
    assert set(asked["flight_id"]) <= labelled
    assert result.feed_rows["outcomes"] >= len(asked) and result.feed_rows["quarantined"] == 0
    assert pd.Timestamp(result.last_outcome) >= asked["outcome_at"].max()
    assert "fresh 100.0%" in err and f"requests {len(asked)}/{len(asked)}" in err
    # A grid point nobody read went with a later push, but every point is in the offline table, once.
    congestion = read_offline_table(names.CONGESTION_VIEW)
    start = replay.month_start(MONTH)
    grid = compute.congestion_grid(start - pd.Timedelta(hours=2), start + pd.Timedelta(days=DAYS), names.ORIGINS)
    grid = grid[grid["event_timestamp"] > start - pd.Timedelta(hours=2)]
    assert sorted(map(tuple, congestion[[names.ORIGIN, "event_timestamp"]].values.tolist())) == \
        sorted(map(tuple, grid[[names.ORIGIN, "event_timestamp"]].values.tolist()))
    n_points = len(grid) // len(names.ORIGINS)
    assert result.feed_rows["congestion"] == len(grid) and result.feed_rows["pushes"] < n_points


def test_the_clock_paces_the_requested_window_at_the_speed(feast):
    speed = 1800.0  # half an hour a second: the morning's two hours of requests take about 4 s
    with StubServer() as stub:
        replay.run(MONTH, days=DAYS, speed=speed, warmup_hours=1, url=stub.url)
    first, last = stub.seen[0], stub.seen[-1]
    simulated = (pd.Timestamp(last["body"]["as_of"]) - pd.Timestamp(first["body"]["as_of"])).total_seconds()
    assert last["at"] - first["at"] >= 0.9 * simulated / speed > 1.0  # paced, not a burst


def test_errors_are_counted_by_kind_and_fail_the_run(feast, capsys):
    world = replay.load_world(MONTH)
    asked = replay.requests_between(world, replay.month_start(MONTH), replay.month_start(MONTH) + pd.Timedelta(
        days=DAYS))
    failing = frozenset(asked["flight"].head(3).astype(int))
    n_failing = int(asked["flight"].isin(failing).sum())
    with StubServer(fail_flights=failing) as stub:
        code = replay.main(["--month", MONTH, "--days", str(DAYS), "--speed", "0", "--warmup-hours", "0",
                            "--url", stub.url, "--max-error-rate", "0.01"])
    out, err = capsys.readouterr()
    assert n_failing >= 3 and code == 1
    assert f"errors {n_failing} (HTTP 500: {n_failing})" in out
    assert "too many errors" in err


def test_an_unreachable_server_is_an_error_not_a_crash(feast, capsys):
    code = replay.main(["--month", MONTH, "--days", "0.2", "--speed", "0", "--warmup-hours", "0", "--limit", "5",
                        "--url", "http://127.0.0.1:9"])
    out, _ = capsys.readouterr()
    assert code == 1 and "errors 5 (ConnectError: 5)" in out


def test_breakpoints_are_the_congestion_grid_and_each_weather_observation():
    start = pd.Timestamp("2013-07-01 03:50", tz="UTC")
    points = replay.breakpoints(start, start + pd.Timedelta(minutes=20))
    assert [f"{p:%H:%M}" for p in points] == ["03:51", "03:55", "04:00", "04:05", "04:10"]


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (replay.percentile(values, 50), replay.percentile(values, 99), replay.percentile([3.0], 99)) == (
        50.0, 99.0, 3.0)
    assert replay.percentile([], 50) != replay.percentile([], 50)  # NaN when nothing succeeded


def test_a_missing_month_is_reported(samples_dir):
    with pytest.raises(SystemExit, match="no flights sample for 2014-01"):
        replay.load_world("2014-01")


def test_the_body_builder_sends_any_missing_tail_number_as_null():
    from serving.client import flight_table_body

    row = {"carrier": "UA", "flight": 1, "origin": "EWR", "dest": "IAH", "distance": 1400.0,
           "event_timestamp": pd.Timestamp("2013-07-01 09:15", tz="UTC")}
    for missing in (None, float("nan"), pd.NA, ""):
        assert flight_table_body({**row, "tailnum": missing})["tailnum"] is None
    assert flight_table_body({**row, "tailnum": "N14228"})["tailnum"] == "N14228"


def test_a_fast_forward_writes_what_the_live_feeds_would_and_the_replay_resumes_fresh_after_it(feast):
    """The demo lets weeks of labels arrive in seconds: one push per feed per step instead of one per breakpoint.
    The offline tables must end exactly as the live feeds leave them, and requests after it see the present."""
    from features.store import FLIGHTS_TABLE, read_offline_table, table_dir

    tables = (names.WEATHER_VIEW, names.CONGESTION_VIEW, FLIGHTS_TABLE, names.CARRIER_VIEW, names.ROUTE_VIEW)
    start_day, end_day = 2 / 24, 12 / 24
    start = replay.month_start(MONTH) + pd.Timedelta(days=start_day)
    end = replay.month_start(MONTH) + pd.Timedelta(days=end_day)

    def tables_now() -> dict[str, pd.DataFrame]:
        out = {}
        for t in tables:
            df = read_offline_table(t)
            keep = [c for c in df.columns if c not in ("created", "batch_id")]  # when and which push: differ
            out[t] = df[keep].sort_values(keep, kind="stable").reset_index(drop=True)
        return out

    live = replay.Feeds(replay.load_world(MONTH), since=start)
    for point in replay.breakpoints(start, end):
        live.at(point)
    pushed_live = tables_now()
    assert all(len(df) for df in pushed_live.values())
    for t in tables:
        for part in table_dir(t).glob("*.parquet"):
            part.unlink()

    done = replay.fast_forward(MONTH, start_day, end_day, step_hours=4)
    assert done.feed_rows["pushes"] == 3 * 3 and done.feed_rows["quarantined"] == 0  # 3 steps x 3 feeds
    assert done.last_outcome == end.isoformat()
    fast = tables_now()
    for t in tables:
        pd.testing.assert_frame_equal(fast[t], pushed_live[t], obj=t)

    with StubServer() as stub:
        replay.run(MONTH, days=1 / 24, speed=0, warmup_hours=0, url=stub.url, from_day=end_day)
    assert len(stub.seen) > 5
    for s in stub.seen:
        as_of = pd.Timestamp(s["body"]["as_of"])
        assert pd.Timestamp(s["congestion_ts"], unit="s", tz="UTC") == as_of.floor(compute.CONGESTION_GRID)
        assert as_of - pd.Timedelta(hours=1) < pd.Timestamp(s["weather_ts"], unit="s", tz="UTC") <= as_of


def test_a_fast_forward_runs_between_hours():
    with pytest.raises(ValueError, match="between two hours"):
        replay.fast_forward(MONTH, 0.5, 0.51)


def test_a_replay_started_off_the_hour_and_stopped_early_answers_exactly_and_leaves_every_grid_point(feast):
    """The demo's continuation ends on a stop; a replay may start at any time. Grid points nobody read
    yet are pushed when it stops, and the first requests of a window that starts off the hour find the
    grid point of their time, not the last hour's."""
    import threading

    from features.store import read_offline_table

    stop = threading.Event()

    class StopAfter(list):
        def append(self, seen):
            super().append(seen)
            if len(self) >= 30:
                stop.set()

    start = replay.month_start(MONTH) + pd.Timedelta(hours=5.5)  # 05:30 local, 09:30Z
    with StubServer() as stub:
        stub.seen = StopAfter()
        result = replay.run(MONTH, days=0.5, speed=0, warmup_hours=1, url=stub.url, from_day=5.5 / 24, stop=stop)
    stopped = pd.Timestamp(result.end)
    assert start < stopped < start + pd.Timedelta(days=0.5) and len(stub.seen) >= 30
    assert pd.Timestamp(stub.seen[0]["body"]["as_of"]) < start + compute.CONGESTION_GRID  # the first point's reader
    for s in stub.seen:
        as_of = pd.Timestamp(s["body"]["as_of"])
        assert pd.Timestamp(s["congestion_ts"], unit="s", tz="UTC") == as_of.floor(compute.CONGESTION_GRID), as_of
        assert as_of - pd.Timedelta(hours=1) < pd.Timestamp(s["weather_ts"], unit="s", tz="UTC") <= as_of
    congestion = read_offline_table(names.CONGESTION_VIEW)
    got = sorted(map(tuple, congestion[[names.ORIGIN, "event_timestamp"]].values.tolist()))
    grid = compute.congestion_grid(start - pd.Timedelta(hours=1), stopped, names.ORIGINS)
    grid = grid[(grid["event_timestamp"] > start - pd.Timedelta(hours=1)) & (grid["event_timestamp"] < stopped)]
    assert got == sorted(map(tuple, grid[[names.ORIGIN, "event_timestamp"]].values.tolist()))


def test_grid_points_nobody_reads_wait_for_a_push_and_settle_pushes_them_all_at_once(feast):
    from features.store import read_offline_table

    start = replay.month_start(MONTH) + pd.Timedelta(hours=2)  # 06:00Z
    feeds = replay.Feeds(replay.load_world(MONTH), since=start)
    for point in replay.breakpoints(start, start + pd.Timedelta(minutes=40)):
        feeds.at(point, read=False)
    assert read_offline_table(names.CONGESTION_VIEW).empty and feeds.counts.pushes == 0
    feeds.settle(start + pd.Timedelta(minutes=42))  # floored to the grid: 06:40
    congestion = read_offline_table(names.CONGESTION_VIEW)
    assert feeds.counts.pushes == 1 and len(congestion) == 8 * len(names.ORIGINS)
    assert sorted(congestion["event_timestamp"].unique()) == list(
        pd.date_range(start + compute.CONGESTION_GRID, start + pd.Timedelta(minutes=40), freq=compute.CONGESTION_GRID))
