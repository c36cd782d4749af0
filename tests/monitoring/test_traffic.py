"""Traffic replay against a stub model server that records what it receives.

The stub stands in for the model server being built in parallel; the assertions
are on what `ops.traffic` sends, at what pace, and what it reports.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from ops import traffic


class StubServer:
    """POST /predict: records the body; answers 500 for the flight numbers in `fail_flights`."""

    def __init__(self, fail_flights: frozenset[int] = frozenset()):
        self.bodies: list[dict] = []
        self.times: list[float] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.bodies.append(body)
                stub.times.append(time.monotonic())
                status = 500 if self.path != "/predict" or body.get("flight") in fail_flights else 200
                payload = json.dumps({"probability": 0.2, "prediction": 0}).encode()
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

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_request_payload_is_the_booking_fields_of_one_flight():
    flight = pd.DataFrame({
        "carrier": ["UA"], "flight": [1545], "tailnum": ["N14228"], "origin": ["EWR"], "dest": ["IAH"],
        "time_hour": [pd.Timestamp("2013-07-01 09:00", tz="UTC")], "minute": [15], "distance": [1400],
    })
    no_tail = flight.assign(tailnum=[None])
    row, = flight.itertuples(index=False)
    assert traffic.request_payload(row) == {
        "carrier": "UA", "flight": 1545, "tailnum": "N14228", "origin": "EWR", "dest": "IAH",
        "sched_dep_ts": "2013-07-01T09:15:00+00:00", "distance": 1400.0,
        "as_of": "2013-07-01T08:15:00+00:00",  # PREDICTION_LEAD before departure, as training joins it
    }
    assert traffic.request_payload(next(no_tail.itertuples(index=False)))["tailnum"] is None


def test_replay_sends_the_month_in_schedule_order_at_the_rate(samples_dir, capsys):
    expected = traffic.load_requests("2013-07", limit=60)
    times = [pd.Timestamp(b["sched_dep_ts"]) for b in expected]
    assert times == sorted(times) and times[0].month == 7
    with StubServer() as stub:
        code = traffic.main(["--month", "2013-07", "--rate", "100", "--limit", "60", "--url", stub.url])
    out, err = capsys.readouterr()
    assert code == 0
    assert sorted(json.dumps(b, sort_keys=True) for b in stub.bodies) == sorted(
        json.dumps(b, sort_keys=True) for b in expected)
    assert stub.times[-1] - stub.times[0] >= 59 / 100 * 0.9  # paced, not a burst
    assert "[##############################] 60/60 100.0%" in err
    assert "ok 60, errors 0 (none)" in out and "latency p50" in out and "p99" in out


def test_errors_are_counted_by_kind_and_fail_the_run(samples_dir, capsys):
    bodies = traffic.load_requests("2013-07", limit=40)
    failing = frozenset(b["flight"] for b in bodies[:4])
    n_failing = sum(b["flight"] in failing for b in bodies)
    with StubServer(fail_flights=failing) as stub:
        code = traffic.main(["--month", "2013-07", "--rate", "200", "--limit", "40", "--url", stub.url,
                             "--max-error-rate", "0.05"])
    out, err = capsys.readouterr()
    assert n_failing >= 4 and code == 1
    assert f"errors {n_failing} (HTTP 500: {n_failing})" in out
    assert "too many errors" in err
    with StubServer(fail_flights=failing) as stub:
        assert traffic.main(["--month", "2013-07", "--rate", "200", "--limit", "40", "--url", stub.url,
                             "--max-error-rate", "0.5"]) == 0


def test_an_unreachable_server_is_an_error_not_a_crash(samples_dir, capsys):
    code = traffic.main(["--month", "2013-07", "--rate", "100", "--limit", "5", "--url", "http://127.0.0.1:9"])
    out, _ = capsys.readouterr()
    assert code == 1 and "errors 5 (ConnectError: 5)" in out


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (traffic.percentile(values, 50), traffic.percentile(values, 99), traffic.percentile([3.0], 99)) == (
        50.0, 99.0, 3.0)
    assert traffic.percentile([], 50) != traffic.percentile([], 50)  # NaN when nothing succeeded


def test_a_missing_month_is_reported(samples_dir):
    with pytest.raises(SystemExit, match="no flights sample for 2014-01"):
        traffic.load_requests("2014-01")


def test_the_body_builder_sends_any_missing_tail_number_as_null():
    from serving.client import flight_table_body

    row = {"carrier": "UA", "flight": 1, "origin": "EWR", "dest": "IAH", "distance": 1400.0,
           "event_timestamp": pd.Timestamp("2013-07-01 09:15", tz="UTC")}
    for missing in (None, float("nan"), pd.NA, ""):
        assert flight_table_body({**row, "tailnum": missing})["tailnum"] is None
    assert flight_table_body({**row, "tailnum": "N14228"})["tailnum"] == "N14228"
