"""The replay's feeds alone: what the live pushes of the demo's July days cost, two ways side by side.

- `per_point`: every congestion grid point pushed at its time, its rows computed for it
  alone (`congestion_chunk` of one grid step), as the replay did before 2026-12-01;
- `read_only`: congestion rows computed a day at a time, and a grid point pushed only when
  a request of the demo's traffic (40% of the flights) reads it, or on the hour
  (`ops.replay.Feeds.at`), as the replay does now.

Both walk the same breakpoints (a day of warm-up, then `--days` of July) with weather and
outcomes as the replay pushes them, nobody asking: the push work without the server's. Each
mode runs in a fresh embedded home, in a subprocess, alternating A B A B so that the
machine's noise falls on both.

    python -m bench feeds [--days 2] [--rounds 2]

Results: bench/results/feeds.json and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.common import REPO, RESULTS, STORAGE_VARS

MONTH, SHARE = "2013-07", 0.4
MODES = ("per_point", "read_only")


def walk(mode: str, days: float) -> dict:
    """One mode in this process's (fresh) home: seconds of the walk and the pushes it made."""
    import pandas as pd

    from features import samples
    from features.store import feature_store
    from ops import replay

    samples.export()
    store = feature_store(apply=True)
    world = replay.load_world(MONTH)
    start = replay.month_start(MONTH)
    end = start + pd.Timedelta(days=days)
    warmup = pd.Timedelta(hours=24)
    asked = pd.DatetimeIndex(replay.requests_between(world, start, end, share=SHARE)["as_of"])
    feeds = replay.Feeds(world, since=start - warmup, store=store)
    if mode == "per_point":
        feeds.congestion_chunk = feeds.grid
    t0 = time.perf_counter()
    for point in replay.breakpoints(start - warmup, end):
        i = asked.searchsorted(point)  # the next request the replay would send
        next_request = asked[i] if i < len(asked) else None
        read = mode == "per_point" or replay.congestion_read(point, next_request, start, end, feeds.grid)
        feeds.at(point, read=read)
    seconds = time.perf_counter() - t0
    return {"mode": mode, "seconds": seconds, "pushes": feeds.counts.pushes, "requests": len(asked),
            "congestion_rows": feeds.counts.congestion, "outcome_rows": feeds.counts.outcomes}


def run_mode(mode: str, days: float) -> dict:
    home = tempfile.mkdtemp(prefix=f"bench-feeds-{mode}-")
    env = {k: v for k, v in os.environ.items() if k not in STORAGE_VARS}
    env.update({"MLOPS_HOME": home, "PYTHONPATH": str(REPO)})
    out = subprocess.run([sys.executable, "-m", "bench.feeds_bench", "--walk", mode, "--days", str(days)],
                         cwd=REPO, env=env, check=True, capture_output=True, text=True).stdout
    shutil.rmtree(home, ignore_errors=True)
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench feeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=2.0, help="July days after the day of warm-up (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds (default 2)")
    parser.add_argument("--walk", choices=MODES, help=argparse.SUPPRESS)  # one mode, in this process
    args = parser.parse_args(argv)
    if args.walk:
        print(json.dumps(walk(args.walk, args.days)))
        return 0
    runs = [run_mode(mode, args.days) for _ in range(args.rounds) for mode in MODES]
    result = {"month": MONTH, "days": args.days, "share": SHARE, "runs": runs, "median_seconds": {
        mode: statistics.median(r["seconds"] for r in runs if r["mode"] == mode) for mode in MODES}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "feeds.json").write_text(json.dumps(result, indent=2))
    print(f"| mode | seconds ({args.rounds} runs) | median | pushes | congestion rows |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        seconds = ", ".join(f"{r['seconds']:.1f}" for r in mine)
        print(f"| {mode} | {seconds} | "
              f"{result['median_seconds'][mode]:.1f} | {mine[0]['pushes']} | {mine[0]['congestion_rows']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
