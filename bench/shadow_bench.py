"""Single-row /predict latency with a shadow version loaded against without one, side by side in one run.

The target (issue 14): with a shadow loaded, single-row p99 <= 1.2 x the p99 without it.
One uvicorn model server (as the stack runs it) serves production; a second registered
version (another HistGradientBoosting of the same size, so the shadow does the same
work as production) is loaded beside it through POST /admin/candidate and removed with
DELETE /admin/candidate. The requests alternate in blocks, without and with the shadow,
so both modes meet the same machine load; each mode's timings are pooled. The
server's counts say how many requests the shadow scored and how many it dropped (a
full queue) in the shadow blocks. Everything runs in a temporary MLOPS_HOME (features
for Jan-Mar 2013, a fresh MLflow server), removed afterwards. Results:
bench/results/shadow.json and a markdown table.

With `--against DIR` (another checkout of this repository, e.g. a worktree of main) a
second model server runs that checkout's code beside this one, on the same MLflow and
features; every block is run on both servers one after the other, so two shadow
implementations meet the same load and are compared side by side in one run.

    python -m bench.shadow_bench [--blocks 8] [--block-requests 250] [--against DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench.common import REPO, measure_in_temp_home
from bench.serving_bench import (
    MODEL_NAME, MONTHS, build_features, free_port, percentiles, start, stop, use_home, workload,
)

TARGET_RATIO = 1.2
TOKEN = "bench-admin-token"
ADMIN_TIMEOUT = 180.0  # s: setting a shadow waits for its worker to start (not timed)


def register_versions(mlflow_url: str) -> tuple[str, str]:
    """Production and the shadow: the same recipe on two early-stopping splits (equal work per row)."""
    import model_registry
    from tests import sample_model

    data = sample_model.split()
    production = sample_model.register(sample_model.fit(data, max_iter=100, seed=0), data, MODEL_NAME, mlflow_url,
                                       alias=model_registry.PRODUCTION)
    shadow = sample_model.register(sample_model.fit(data, max_iter=100, seed=1), data, MODEL_NAME, mlflow_url,
                                   alias=None)
    return production, shadow


def timed_block(http, url: str, bodies: list[dict], start_at: int, requests: int) -> list[float]:
    timings = []
    for i in range(start_at, start_at + requests):
        t0 = time.perf_counter()
        resp = http.post(url, json=bodies[i % len(bodies)])
        timings.append((time.perf_counter() - t0) * 1000)
        resp.raise_for_status()
    return timings


def measure(args, home: Path) -> dict:
    import httpx

    mlflow_port = free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    env = use_home(home, mlflow_url)
    env["MLOPS_MODEL_SERVER_ADMIN_TOKEN"] = TOKEN
    (home / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    build_features(home)
    print(f"features for {', '.join(MONTHS)} built in {time.monotonic() - t0:.0f}s", flush=True)
    procs = []
    try:
        bin_dir = Path(sys.executable).parent
        procs.append(start([str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                            "--workers", "1", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                            "--artifacts-destination", str(home / "artifacts")],
                           env, home / "logs" / "mlflow.log", f"{mlflow_url}/health"))
        production, shadow = register_versions(mlflow_url)
        payloads, _, _ = workload(production)
        servers = {"this": (REPO, "model-server.log")}
        if args.against:
            servers["against"] = (Path(args.against).resolve(), "model-server-against.log")
        bases = {}
        for label, (repo, log_name) in servers.items():
            server_port = free_port()
            base = f"http://127.0.0.1:{server_port}"
            server_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH", "")]))}
            procs.append(start([sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1",
                                "--port", str(server_port), "--no-access-log"],
                               server_env, home / "logs" / log_name, f"{base}/health",
                               ready=lambda r: r.status_code == 200 and r.json()["ready"]))
            bases[label] = base
        admin = {"Authorization": f"Bearer {TOKEN}"}
        runs = {label: {"without_shadow": [], "with_shadow": [], "scored": 0, "dropped": 0} for label in bases}
        load_start = os.getloadavg()
        clients = {label: httpx.Client(base_url=base, timeout=10) for label, base in bases.items()}
        try:
            for http in clients.values():
                timed_block(http, "/predict", payloads, 0, 200)  # warm up
                # the shadow's first load (download) happens once, outside the timed blocks
                http.post("/admin/candidate", json={"version": shadow, "mode": "shadow"},
                          headers=admin, timeout=ADMIN_TIMEOUT).raise_for_status()
                http.delete("/admin/candidate", headers=admin, timeout=ADMIN_TIMEOUT).raise_for_status()
            at = 0
            print(f"measuring {args.blocks} blocks of {args.block_requests} requests per mode on {list(bases)} ...",
                  flush=True)
            for block in range(2 * args.blocks):
                with_shadow = block % 2 == 1
                order = list(clients.items())
                if block // 2 % 2:  # neither server always goes first
                    order.reverse()
                for label, http in order:
                    run = runs[label]
                    if with_shadow:
                        http.post("/admin/candidate", json={"version": shadow, "mode": "shadow"},
                                  headers=admin, timeout=ADMIN_TIMEOUT).raise_for_status()
                    run["with_shadow" if with_shadow else "without_shadow"] += timed_block(
                        http, "/predict", payloads, at, args.block_requests)
                    if with_shadow:
                        time.sleep(0.2)  # the queue drains before the counts are read
                        counts = http.delete("/admin/candidate", headers=admin,
                                             timeout=ADMIN_TIMEOUT).json()["counts"]
                        run["scored"] += counts["shadow_scored"]
                        run["dropped"] += counts["shadow_dropped"]
                at += args.block_requests
        finally:
            for http in clients.values():
                http.close()
        load_end = os.getloadavg()

        def summary(run: dict) -> dict:
            without, with_ = percentiles(run["without_shadow"]), percentiles(run["with_shadow"])
            return {
                "machine": {"cpus": os.cpu_count(), "loadavg_at_start": load_start, "loadavg_at_end": load_end},
                "versions": {"production": production, "shadow": shadow},
                "without_shadow": without, "with_shadow": with_,
                "p99_ratio": with_["p99_ms"] / without["p99_ms"], "p50_ratio": with_["p50_ms"] / without["p50_ms"],
                "target_ratio": TARGET_RATIO, "shadow_scored": run["scored"], "shadow_dropped": run["dropped"],
                "blocks": args.blocks, "block_requests": args.block_requests,
            }

        result = summary(runs["this"])
        if "against" in runs:
            result["against"] = {**summary(runs["against"]), "repo": str(servers["against"][0])}
        return result
    finally:
        for proc in reversed(procs):
            stop(proc)


def table(result: dict) -> str:
    if "against" in result:
        return (f"this checkout ({REPO}):\n{table({k: v for k, v in result.items() if k != 'against'})}\n\n"
                f"against {result['against']['repo']}:\n{table(result['against'])}")
    lines = ["| mode | p50 ms | p90 ms | p99 ms | requests |", "|---|---|---|---|---|"]
    for key, label in (("without_shadow", "production alone"), ("with_shadow", "with a shadow loaded")):
        s = result[key]
        lines.append(f"| {label} | {s['p50_ms']:.2f} | {s['p90_ms']:.2f} | {s['p99_ms']:.2f} | {s['n']} |")
    m = result["machine"]
    met = "met" if result["p99_ratio"] <= result["target_ratio"] else "NOT met"
    lines.append(f"\np99 ratio {result['p99_ratio']:.2f} (target <= {result['target_ratio']}: {met}), p50 ratio "
                 f"{result['p50_ratio']:.2f}; the shadow scored {result['shadow_scored']} requests and dropped "
                 f"{result['shadow_dropped']}; {m['cpus']} CPUs, load average {m['loadavg_at_start'][0]:.1f} -> "
                 f"{m['loadavg_at_end'][0]:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shadow_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=8, help="blocks per mode, alternating")
    parser.add_argument("--block-requests", type=int, default=250, help="sequential requests per block")
    parser.add_argument("--against", metavar="DIR", help="another checkout whose server is measured beside this "
                        "one, block after block (e.g. a worktree of main)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary MLOPS_HOME (logs)")
    args = parser.parse_args(argv)
    result = measure_in_temp_home(measure, args, "bench-shadow-", "shadow.json")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
