"""Traffic replay: act like a booking system asking the model server about a month's flights.

    python -m ops.traffic --month 2013-07 --rate 50 [--limit N] [--url URL]

Reads the month's sample (`features.samples.sample_path`), sends each flight's
request fields to `POST <model server>/predict` in scheduled-departure order at
`--rate` requests per second (open loop: a slow answer does not slow the
schedule, up to `--concurrency` requests in flight), shows a progress bar on
stderr, then prints the latency percentiles and error counts. Exits 1 when the
share of failed requests exceeds `--max-error-rate`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import settings

PROGRESS_WIDTH = 30


def request_payload(flight) -> dict:
    """The /predict body for one flight (a row of the monthly sample), asked PREDICTION_LEAD before departure."""
    from features.compute import PREDICTION_LEAD
    from serving.client import predict_body

    sched = flight.time_hour + timedelta(minutes=int(flight.minute))
    return predict_body(carrier=flight.carrier, flight=flight.flight, tailnum=flight.tailnum, origin=flight.origin,
                        dest=flight.dest, sched_dep_ts=sched, distance=flight.distance, as_of=sched - PREDICTION_LEAD)


def load_requests(month: str, limit: int | None = None) -> list[dict]:
    """The month's flights as request bodies, in scheduled-departure order."""
    import pandas as pd

    from features import samples

    path = samples.sample_path("flights", month)
    if not path.exists():
        samples.export()
    if not path.exists():
        raise SystemExit(f"no flights sample for {month}: expected {path}")
    df = pd.read_parquet(path)
    df = df.assign(_sched=df["time_hour"] + pd.to_timedelta(df["minute"], unit="m")).sort_values(
        "_sched", kind="stable")
    if limit is not None:
        df = df.head(limit)
    return [request_payload(row) for row in df.itertuples(index=False)]


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
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)

    def ok(self, ms: float) -> None:
        self.done += 1
        self.latencies_ms.append(ms)

    def failed(self, kind: str) -> None:
        self.done += 1
        self.errors[kind] += 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class Progress:
    """A plain-text progress bar on stderr: redrawn in place on a terminal, a line per 10% otherwise."""

    def __init__(self, tally: Tally, stream=None):
        self.tally, self.stream = tally, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self._drawn_at = -1  # requests done when the bar was last drawn

    def line(self) -> str:
        t = self.tally
        frac = t.done / t.total if t.total else 1.0
        filled = int(frac * PROGRESS_WIDTH)
        rate = t.done / max(time.monotonic() - self.t0, 1e-9)
        return (f"[{'#' * filled}{'.' * (PROGRESS_WIDTH - filled)}] {t.done}/{t.total} {100 * frac:5.1f}% "
                f"{rate:6.1f} req/s errors {t.error_count}")

    def update(self, final: bool = False) -> None:
        now = time.monotonic()
        decile = int(10 * self.tally.done / self.tally.total) if self.tally.total else 10
        if self.tty and (final or now - self._last_draw >= 0.2):
            self._write("\r" + self.line() + ("\n" if final else ""))
            self._last_draw = now
        elif not self.tty and (decile > self._last_decile or (final and self._drawn_at != self.tally.done)):
            self._write(self.line() + "\n")
            self._last_decile = decile

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
        self._drawn_at = self.tally.done


async def _send(client, url: str, body: dict, tally: Tally) -> None:
    import httpx

    t0 = time.perf_counter()
    try:
        resp = await client.post(url, json=body)
    except httpx.HTTPError as exc:
        tally.failed(type(exc).__name__)
        return
    if resp.is_success:
        tally.ok((time.perf_counter() - t0) * 1000)
    else:
        tally.failed(f"HTTP {resp.status_code}")


async def replay(bodies: list[dict], url: str, rate: float, concurrency: int = 8, timeout: float = 10.0,
                 stream=None) -> Tally:
    """Send each body at its slot (start + i / rate); returns the tally once all have answered."""
    import httpx

    tally = Tally(total=len(bodies))
    progress = Progress(tally, stream)
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def one(body: dict) -> None:
        try:
            await _send(client, url, body, tally)
        finally:
            slots.release()
            progress.update()

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.monotonic()
        pending = []
        for i, body in enumerate(bodies):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            await slots.acquire()
            pending.append(asyncio.create_task(one(body)))
        await asyncio.gather(*pending)
    progress.update(final=True)
    return tally


def summary(tally: Tally, seconds: float) -> str:
    lat = sorted(tally.latencies_ms)
    errors = ", ".join(f"{kind}: {n}" for kind, n in tally.errors.most_common()) or "none"
    return "\n".join([
        f"sent {tally.total} requests in {seconds:.1f}s ({tally.total / max(seconds, 1e-9):.1f} req/s)",
        f"ok {len(lat)}, errors {tally.error_count} ({errors})",
        f"latency p50 {percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms",
    ])


def main(argv: list[str] | None = None) -> int:
    cfg = settings.get()
    parser = argparse.ArgumentParser(prog="python -m ops.traffic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--month", required=True, help="YYYY-MM, for example 2013-07")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    parser.add_argument("--limit", type=int, default=None, help="send only the first N flights")
    parser.add_argument("--url", default=cfg.model_server_url, help="model server base URL")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at most (default 8)")
    parser.add_argument("--max-error-rate", type=float, default=0.01,
                        help="exit 1 when more than this share of requests fail (default 0.01)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.concurrency <= 0:
        parser.error("--rate and --concurrency must be positive")

    bodies = load_requests(args.month, args.limit)
    target = f"{args.url.rstrip('/')}/predict"
    print(f"replaying {len(bodies)} flights of {args.month} to {target} at {args.rate:g} req/s", file=sys.stderr)
    t0 = time.monotonic()
    tally = asyncio.run(replay(bodies, target, args.rate, args.concurrency))
    print(summary(tally, time.monotonic() - t0))
    if tally.total and tally.error_count / tally.total > args.max_error_rate:
        print(f"too many errors: {tally.error_count}/{tally.total} > {args.max_error_rate:.1%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
