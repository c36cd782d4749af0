"""The replay on a live stack: serving latency while the chain works, and a month at full speed.

For each batch niceness (0: Airflow and MLflow at the model server's priority, 10: the
stack's default, `MLOPS_BATCH_NICENESS`), one after the other in one run, a fresh embedded
stack in a temporary MLOPS_HOME on free ports runs `make demo`'s loop: Jan + Feb dropped,
v1 trained and deployed, then three July days replayed at 3600x while monitoring reports,
the drift-triggered training trains and serving validates and deploys v2. The replay's own
latencies are split into the answers given while a training or serving run was active
(from Airflow's run times) and the others.

Then, on the last stack, the whole month is replayed at full speed (`--speed 0`): wall
time, requests/s, and feed rows pushed per second of push time.

    python -m bench.replay_bench [--niceness 0 10] [--no-month] [--keep-home]

Results: bench/results/replay.json and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from tests.support import free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
MONTH, DAYS, SPEED = "2013-07", 3.0, 3600.0


def percentile(values: list[float], q: float) -> float | None:
    from ops.replay import percentile as nearest_rank

    return nearest_rank(sorted(values), q) if values else None


def busy_intervals(client, dag_ids=("training", "serving")) -> list[tuple[float, float]]:
    """(start, end) in epoch seconds of every run of the chain's heavy DAGs."""
    from datetime import datetime

    out = []
    for dag_id in dag_ids:
        for run in client.dag_runs(dag_id, limit=50):
            if run.get("start_date") and run.get("end_date"):
                out.append((datetime.fromisoformat(run["start_date"]).timestamp(),
                            datetime.fromisoformat(run["end_date"]).timestamp()))
    return out


def split_latencies(latencies: list, busy: list[tuple[float, float]]) -> dict:
    during = [ms for at, ms in latencies if any(lo <= at <= hi for lo, hi in busy)]
    other = [ms for at, ms in latencies if not any(lo <= at <= hi for lo, hi in busy)]
    return {
        "answers": len(latencies), "p50_ms": percentile([ms for _, ms in latencies], 50),
        "p99_ms": percentile([ms for _, ms in latencies], 99),
        "during_chain": {"answers": len(during), "p50_ms": percentile(during, 50), "p99_ms": percentile(during, 99)},
        "otherwise": {"answers": len(other), "p50_ms": percentile(other, 50), "p99_ms": percentile(other, 99)},
    }


def inner(args) -> dict:
    """Runs inside the bench's own environment (see `main`)."""
    from argparse import Namespace

    import settings
    from ops import demo, replay, stack
    from ops.airflow_api import AirflowClient

    cfg = settings.get()
    load_before = os.getloadavg()
    try:
        shown = demo.run(Namespace(months=2, replay_month=MONTH, days=DAYS, speed=SPEED, share=1.0))
        played = shown["replay"]
        result = {
            "niceness": cfg.batch_niceness, "load_average_before": load_before,
            "replay_s": played.seconds, "requests": played.requests, "fresh_share": played.fresh_share,
            "labelled": shown["served_rows_labelled"], "logged": shown["served_rows_logged"],
            "versions": played.versions, "latency": split_latencies(played.latencies, busy_intervals(AirflowClient())),
        }
        if args.month:
            t0 = time.monotonic()
            month = replay.run(MONTH, days=None, speed=0)
            result["month"] = {**{k: v for k, v in asdict(month).items() if k != "latencies"},
                               "wall_s": time.monotonic() - t0, "load_average_after": os.getloadavg()}
        return result
    finally:
        stack.down(cfg)


def print_table(results: list[dict]) -> None:
    print("\n| batch niceness | answers | p50 ms | p99 ms | p99 ms while training/serving ran (answers) "
          "| p99 ms otherwise | fresh | labelled |\n|---|---|---|---|---|---|---|---|")
    for r in results:
        lat = r["latency"]
        print(f"| {r['niceness']} | {lat['answers']} | {lat['p50_ms']:.1f} | {lat['p99_ms']:.1f} "
              f"| {lat['during_chain']['p99_ms'] or float('nan'):.1f} ({lat['during_chain']['answers']}) "
              f"| {lat['otherwise']['p99_ms'] or float('nan'):.1f} | {100 * r['fresh_share']:.1f}% "
              f"| {r['labelled']}/{r['logged']} |")
    for r in results:
        m = r.get("month")
        if m:
            f = m["feed_rows"]
            print(f"\nJuly at full speed (niceness {r['niceness']}): {m['requests']} requests in {m['wall_s']:.0f}s "
                  f"({m['requests_per_second']:.0f} req/s, p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms), "
                  f"{f['pushes']} pushes of {f['weather'] + f['congestion'] + f['outcomes'] + f['delay_rates']} rows "
                  f"in {f['seconds']:.0f}s of push time ({m['feed_rows_per_second']:.0f} rows/s), "
                  f"fresh {100 * m['fresh_share']:.1f}%")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay_bench")
    parser.add_argument("--niceness", type=int, nargs="+", default=[0, 10])
    parser.add_argument("--no-month", dest="month", action="store_false", help="skip the full-speed month")
    parser.add_argument("--keep-home", action="store_true")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        Path(args.inner).write_text(json.dumps(inner(args), default=str))
        return 0

    results = []
    for i, niceness in enumerate(args.niceness):
        home = Path(tempfile.mkdtemp(prefix=f"bench-replay-n{niceness}-"))
        out = home / "result.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AIRFLOW__", "MLFLOW_"))}
        env.update({
            "PYTHONPATH": str(REPO), "MLOPS_HOME": str(home), "MLOPS_BATCH_NICENESS": str(niceness),
            "MLOPS_AIRFLOW_URL": f"http://127.0.0.1:{free_port()}",
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
            "MLOPS_MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}",
            # Three replayed days of every flight: 2-day monitoring windows close inside them (the bench
            # measures serving under the chain's work, as it did before windows were spans of days).
            "MLOPS_MONITOR_WINDOW_DAYS": "2",
        })
        samples = REPO / ".local" / "samples"
        if samples.exists():
            shutil.copytree(samples, home / "samples")
        last = i == len(args.niceness) - 1
        cmd = [sys.executable, "-m", "bench.replay_bench", "--inner", str(out)] + ([] if args.month and last
                                                                                 else ["--no-month"])
        try:
            code = subprocess.run(cmd, env=env, cwd=REPO).returncode
            if code != 0:
                print(f"replay bench failed (exit {code}); logs in {home / 'logs'}", file=sys.stderr)
                args.keep_home = True
                return 1
            results.append(json.loads(out.read_text()))
        finally:
            if not args.keep_home:
                shutil.rmtree(home, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replay.json").write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "runs": results},
                                                    indent=2, default=str))
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
