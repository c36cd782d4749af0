"""Time from `registered_model` to full promotion through a staged rollout, with the default shadow and
canary settings, on the replay's live traffic, and how it splits between the steps.

The embedded stack in a fresh MLOPS_HOME: Jan and Feb 2013 dropped, v1 trained and deployed by the
chain. Then March is replayed (feeds, 40% of the flights asked at their time, outcomes as flights
arrive, at 5400x, as in `make demo`) and, once traffic flows, a second version is registered: the
same model as v1 (a new version of v1's run), so every check passes and what is measured is the
rollout's own time, not a verdict. Its `registered_model` event goes through the REST API, as a
training run's would. The training and monitoring DAGs are paused meanwhile, so nothing else moves.
Every MLOPS_SHADOW_*, MLOPS_CANARY_* and MLOPS_ROLLOUT_* setting is left at its default.

    python -m bench rollout [--speed 5400] [--share 0.4] [--keep-home]

Results: bench/results/rollout.json and a table of the steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from bench.common import REPO, RESULTS, stack_addresses

MONTHS = ["2013-01", "2013-02"]
REPLAY_MONTH = "2013-03"
STEPS = ["choose_version", "validate", "start_shadow", "wait_for_shadow", "judge_shadow", "start_canary",
         "wait_for_canary", "judge_canary", "promote", "reload_server", "wait_for_server", "smoke_test", "publish"]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def copy_of_production(cfg) -> str:
    """A new version of the production version's run and model (same artifacts, same tags)."""
    import model_registry

    client = model_registry.client(cfg.mlflow_tracking_uri)
    production = model_registry.production_version(cfg.mlflow_tracking_uri, cfg.model_name)
    source = client.get_model_version(cfg.model_name, production)
    # MLflow 3 names a logged model in the source (models:/m-<id>) and wants its id beside it
    model_id = source.source.split("/", 1)[1] if source.source.startswith("models:/") else None
    copy = client.create_model_version(cfg.model_name, source.source, run_id=source.run_id, model_id=model_id,
                                       tags=dict(source.tags), description=f"a copy of v{production} (bench)")
    deadline = time.monotonic() + 60
    while client.get_model_version(cfg.model_name, copy.version).status != "READY":
        if time.monotonic() > deadline:
            raise TimeoutError(f"version {copy.version} not READY")
        time.sleep(0.5)
    return str(copy.version)


def announce(airflow, cfg, version: str) -> float:
    """Emit `registered_model` for `version` through the REST API; returns when it was sent."""
    import datasets

    extra = datasets.registered_model_extra(
        model_name=cfg.model_name, version=version, run_id="", metrics={}, champion_version=None,
        champion_metrics=None, trigger_reason="manual", gate_rule="registered by bench/rollout_bench.py",
        feature_table_events=[], drift_report_events=[])
    asset_id = airflow.asset("registered_model")["id"]
    sent = time.time()
    airflow.post("/api/v2/assets/events", {"asset_id": asset_id, "extra": dict(extra)})
    return sent


def steps(airflow, run_id: str) -> dict[str, dict]:
    out = {}
    for ti in airflow.task_instances("serving", run_id):
        if ti.get("start_date") and ti.get("end_date"):
            out[ti["task_id"]] = {"start": _ts(ti["start_date"]), "end": _ts(ti["end_date"]), "state": ti["state"]}
    return out


def inner(args) -> dict:
    """Runs inside the bench's own environment (see `main`)."""
    import settings
    from features import samples
    from ops import replay, stack
    from ops.airflow_api import AirflowClient

    cfg = settings.get()
    samples.export()
    stack.up(cfg, timeout=600, later=frozenset({"evidently"}))
    traffic_stop, played = threading.Event(), {}
    try:
        airflow = AirflowClient()
        deployed_before = len(airflow.asset_events("deployed_model"))
        for month in MONTHS:
            samples.drop(month)
        airflow.wait_for_event("deployed_model", after_id=0, timeout=600)
        for dag_id in ("training", "monitoring"):
            airflow._http.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": True}, headers=airflow._auth())
        print(f"v1 deployed ({deployed_before} before); replaying {REPLAY_MONTH}", flush=True)

        def traffic():
            played["result"] = replay.run(REPLAY_MONTH, speed=args.speed, share=args.share, warmup_hours=6,
                                          stop=traffic_stop, stream=open(os.devnull, "w"))

        thread = threading.Thread(target=traffic, daemon=True)
        thread.start()
        time.sleep(args.settle)  # the feeds' warm-up, then requests flowing
        version = copy_of_production(cfg)
        runs_before = {r["dag_run_id"] for r in airflow.dag_runs("serving", limit=50)}
        sent = announce(airflow, cfg, version)
        deadline = time.monotonic() + args.timeout
        run = None
        while time.monotonic() < deadline:
            new = [r for r in airflow.dag_runs("serving", limit=50) if r["dag_run_id"] not in runs_before]
            if new and new[0]["state"] in ("success", "failed"):
                run = new[0]
                break
            time.sleep(2)
        if run is None:
            raise TimeoutError(f"the serving run of v{version} did not finish in {args.timeout:.0f}s")
        spans = steps(airflow, run["dag_run_id"])
        deployed = [e for e in airflow.asset_events("deployed_model") if str(e["extra"]["version"]) == version]
        counts = {stage: (deployed[0]["extra"].get("rollout") or {}).get(stage, {}).get("numbers", {}).get("rows")
                  for stage in ("shadow", "canary")} if deployed else {}
        return {
            "version": version, "run_state": run["state"], "promoted": bool(deployed),
            "speed": args.speed, "share": args.share,
            "settings": {k: getattr(cfg, k) for k in ("shadow_min_rows", "canary_share", "canary_min_rows",
                                                      "rollout_poll_seconds", "rollout_min_labelled")},
            "sent": sent, "run_start": _ts(run["start_date"]), "run_end": _ts(run["end_date"]),
            "total_s": _ts(run["end_date"]) - sent, "steps": spans, "rows": counts,
            "load_average": os.getloadavg(),
        }
    finally:
        traffic_stop.set()
        stack.down(cfg)


def table(result: dict) -> str:
    sent, spans = result["sent"], result["steps"]
    lines = ["| step | starts at (s) | takes (s) |", "|---|---|---|",
             f"| event -> run starts | | {result['run_start'] - sent:.1f} |"]
    for step in STEPS:
        if step in spans:
            s = spans[step]
            lines.append(f"| {step} | {s['start'] - sent:.1f} | {s['end'] - s['start']:.1f} |")
    outcome = "promoted" if result["promoted"] else f"not promoted (run {result['run_state']})"
    lines.append(f"\nv{result['version']} {outcome}: {result['total_s']:.0f} s from the event to the end of the "
                 f"run; shadow {result['rows'].get('shadow')} rows, canary {result['rows'].get('canary')} rows; "
                 f"replay at {result['speed']:g}x asking {result['share']:.0%} of the flights; settings "
                 f"{result['settings']}; load average at the end {result['load_average'][0]:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed", type=float, default=5400.0, help="replay speed (simulated seconds per second)")
    parser.add_argument("--share", type=float, default=0.4, help="share of the flights asked about")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds of traffic before the version comes")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--keep-home", action="store_true")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        Path(args.inner).write_text(json.dumps(inner(args)))
        return 0
    home = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    out = home / "result.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AIRFLOW__", "MLFLOW_"))}
    env.update(stack_addresses(home))
    samples = REPO / ".local" / "samples"
    if samples.exists():
        shutil.copytree(samples, home / "samples")
    cmd = [sys.executable, "-m", "bench.rollout_bench", "--inner", str(out), "--speed", str(args.speed),
           "--share", str(args.share), "--settle", str(args.settle), "--timeout", str(args.timeout)]
    keep = args.keep_home
    try:
        code = subprocess.run(cmd, env=env, cwd=REPO).returncode
        if code != 0:
            print(f"rollout bench failed (exit {code}); logs in {home / 'logs'}", file=sys.stderr)
            keep = True
            return 1
        result = json.loads(out.read_text())
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rollout.json").write_text(json.dumps(result, indent=2))
    print(table(result))
    return 0 if result["promoted"] else 1


if __name__ == "__main__":
    sys.exit(main())
