"""`make demo`: the whole loop on the embedded stack, one line per hop.

1. Bring the stack up.
2. Drop the first months not yet ingested; follow feature_table -> training ->
   registered_model -> serving -> deployed_model.
3. Replay the first 7.5 days of a later month, whose weather has drifted, on the
   replay clock (`ops.replay`): live feeds, 40% of the flights asked about at their
   time, every outcome as its flight arrives. The first monitoring window (7 days of
   departures) closes on day 8.
4. Follow monitoring -> drift_report -> training. A week of labels is too few to learn
   the new season from (`bench/retrain_bench.py`): the training run waits, deferred, for
   MLOPS_RETRAIN_MIN_NEW_LABELS labelled flights newer than the champion's data. The demo
   fast-forwards the feeds to day 21.5 (`ops.replay.fast_forward`: the same feature rows
   and outcomes, a day per push, nobody asking), so two more weeks of labels arrive in
   seconds, and resumes the live traffic there.
5. Follow training (on three weeks of summer labels) -> registered_model -> serving
   (shadow, then canary, on the live traffic) -> deployed_model.

Each wait has a bound; a hop that does not arrive ends the demo with a non-zero
exit code, the hop's name and the log of the task that should have produced it.
It works again over an existing `.local/`: months already ingested are skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass

import settings
import storage
from features import samples
from features.names import LABEL
from ops import replay, stack
from ops.airflow_api import AirflowClient

T0 = time.monotonic()


def say(hop: str, detail: str = "") -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {hop:<18} {detail}", flush=True)


class HopMissing(RuntimeError):
    def __init__(self, hop: str, dag_id: str, log_hint: str):
        super().__init__(f"hop {hop!r} did not arrive; look at {dag_id}: {log_hint}")


@dataclass
class Follower:
    client: AirflowClient
    cfg: settings.Settings

    def last_id(self, asset: str) -> int:
        events = self.client.asset_events(asset)
        return events[-1]["id"] if events else 0

    def wait(self, asset: str, after_id: int, timeout: float, producer: str, predicate=None) -> dict:
        try:
            return self.client.wait_for_event(asset, after_id=after_id, timeout=timeout, predicate=predicate)
        except TimeoutError:
            raise HopMissing(asset, producer, self.log_hint(producer)) from None

    def log_hint(self, dag_id: str) -> str:
        """Where to look: the newest run's first unfinished or failed task, and its log folder."""
        runs = self.client.dag_runs(dag_id, limit=1)
        if not runs:
            return f"no {dag_id} run started (is the DAG parsed and unpaused? {self.cfg.airflow_url}/dags/{dag_id})"
        run = runs[0]
        for ti in self.client.task_instances(dag_id, run["dag_run_id"]):
            if ti["state"] != "success":
                folder = (self.cfg.home / "logs" / "airflow" / f"dag_id={dag_id}" / f"run_id={run['dag_run_id']}"
                          / f"task_id={ti['task_id']}")
                return f"task {ti['task_id']} is {ti['state']}; log: {folder}"
        return f"run {run['dag_run_id']} is {run['state']}"

    def training_outcome(self, after_id: int, since: str, timeout: float) -> dict | None:
        """The registered_model event of the next training run, or None when its gate held.

        `since` is an ISO time before the hop began: a training run that started after
        it and succeeded without a new registered_model event is a gate that held.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = [e for e in self.client.asset_events("registered_model") if e["id"] > after_id]
            if events:
                return events[0]
            finished = [r for r in self.client.dag_runs("training", limit=5)
                         if r["state"] == "success" and (r["start_date"] or "") > since]
            if finished:
                time.sleep(2)  # the event is written with the task's success; look once more
                events = [e for e in self.client.asset_events("registered_model") if e["id"] > after_id]
                return events[0] if events else None
            time.sleep(1)
        raise HopMissing("registered_model", "training", self.log_hint("training"))

    def training_waits_for_labels(self, since: str, timeout: float) -> bool:
        """Whether the first training run started after `since` is waiting for labelled flights
        (its wait_for_labels task deferred) rather than building its training set."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.client.dag_runs("training", limit=5):
                if (run["start_date"] or "") <= since:
                    continue
                tis = self.client.task_instances("training", run["dag_run_id"])
                states = {ti["task_id"]: ti["state"] for ti in tis}
                if states.get("wait_for_labels") == "deferred":
                    return True
                if states.get("wait_for_labels") in ("success", "skipped") or run["state"] == "failed":
                    return False
            time.sleep(1)
        raise HopMissing("training", "training", self.log_hint("training"))


# -- one line per hop, read from each event's extra (its type: datasets.py) ------------------------
def describe_feature_table(x: dict) -> str:
    return (f"batch {x['batch_id']}: {x['rows_accepted']} rows accepted, {x['rows_quarantined']} quarantined, "
            f"{(x['event_time_min'] or '')[:10]}..{(x['event_time_max'] or '')[:10]}")


def flight_files_accepted(x: dict) -> int:
    return sum(1 for f in x["files"] if f["kind"] == "flights" and f["status"] == "accepted")


def describe_registered(x: dict) -> str:
    return f"v{x['version']} ({x['trigger_reason']}) metrics {x['metrics']}"


def describe_deployed(x: dict) -> str:
    previous = f"previous v{x['previous_version']}" if x["previous_version"] else "first deployment"
    return f"v{x['version']} serving ({previous})"


def describe_stage_numbers(n: dict) -> str:
    """A rollout verdict's numbers in one line: traffic, latency, agreement, score shift, labelled quality."""
    parts = [f"{n['rows']} rows"] if "rows" in n else []
    if n.get("errors") is not None:
        parts.append(f"{n['errors']} errors")
    for key, label, fmt in (("latency_ratio", "latency", "{:.2f}x production's"), ("agreement", "agreement", "{:.3f}"),
                            ("score_psi", "score PSI", "{:.3f}")):
        if isinstance(n.get(key), (int, float)):
            parts.append(f"{label} {fmt.format(n[key])}")
    quality = n.get("quality")
    if isinstance(quality, dict):
        labelled = min((n.get("labelled_rows") or {}).values() or [0])
        shown = []
        for metric, m in quality.items():  # every metric the judge compared, in its order
            if isinstance(m, dict) and "improvement" in m:
                interval = m.get("interval")
                shown.append(f"{metric} {m['improvement']:+.3f}" +
                             (f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""))
        parts.append(f"vs production on {labelled} labelled: " + ", ".join(shown))
    elif isinstance(quality, str):
        parts.append(f"quality {quality}")
    return ", ".join(parts)


def describe_rollout(x: dict) -> list[str]:
    """One line per rollout stage the new version went through on live traffic, with its numbers."""
    return [f"{stage} {'passed' if r.get('passed', True) else 'failed'}: {describe_stage_numbers(r.get('numbers') or {})}"
            for stage, r in (x.get("rollout") or {}).items()]


def describe_rollback(version: str, reason: str) -> str:
    """The rollback reason a version is tagged with, its measured numbers (a dict after "Measured: ") in one line."""
    import ast

    said, _, measured = reason.partition(". Measured: ")
    try:
        numbers = ast.literal_eval(measured)
    except (ValueError, SyntaxError):
        numbers = None
    line = f"v{version} rolled back, production keeps serving: {said}"
    return line + (f" ({describe_stage_numbers(numbers)})" if isinstance(numbers, dict) else "")


def describe_drift(x: dict) -> str:
    w = x["window"]
    return (f"v{x['model_version']}, {w['rows']} flights departing {(w['departures_from'] or '')[:16]}.."
            f"{(w['departures_to'] or '')[:16]}: failed {'; '.join(x['failed_tests']) or 'none'} "
            f"(drifted columns {', '.join(x['drifted_columns']) or 'none'}): {x['report_path']}")


def describe_label_wait(cfg: settings.Settings) -> str:
    import logging

    from training.tasks import new_labels_since_champion

    logging.getLogger().setLevel(logging.WARNING)  # importing Airflow (through datasets) turned INFO on
    count, as_of, version = new_labels_since_champion(cfg)
    return (f"the drift retraining waits for labels: {count:,} labelled flights departed after v{version}'s data "
            f"(as of {(as_of or '')[:10]}), it needs {cfg.retrain_min_new_labels:,} (MLOPS_RETRAIN_MIN_NEW_LABELS)")


def months_to_drop(count: int) -> list[str]:
    """The first `count` months whose sample files have not been ingested yet."""
    store = storage.get()
    samples.export()
    todo = []
    for m in range(1, 13):
        month = f"2013-{m:02d}"
        sha = hashlib.sha256(samples.sample_path("flights", month).read_bytes()).hexdigest()
        if not store.exists(store.url("processed", "_ledger", f"{sha}.json")):
            todo.append(month)
        if len(todo) == count:
            break
    return todo


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


def last_gate_explanation(cfg: settings.Settings) -> str | None:
    """The newest gate decision in words (training tags the challenger's run with it)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.mlflow_tracking_uri)
    found = client.get_experiment_by_name(cfg.mlflow_experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], "tags.challenger = 'true'", order_by=["start_time DESC"],
                              max_results=1)
    return runs[0].data.tags.get("gate_explanation") if runs else None


def deployment_outcome(f: Follower, dep_after: int, version: str, since: str, timeout: float) -> dict | None:
    """The version's deployed_model event, or None (said why) when its serving run rolled it back."""
    from mlflow import MlflowClient

    from model_registry import Tag

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in f.client.asset_events("deployed_model"):
            if e["id"] > dep_after and str(e["extra"]["version"]) == version:
                return e
        failed = [r for r in f.client.dag_runs("serving", limit=3)
                  if r["state"] == "failed" and (r["start_date"] or "")[:19] >= since[:19]]
        if failed:
            tags = MlflowClient(tracking_uri=f.cfg.mlflow_tracking_uri).get_model_version(
                f.cfg.model_name, version).tags
            reason = tags.get(Tag.ROLLBACK_REASON)
            say("rollout", describe_rollback(version, reason) if reason else
                f"v{version} not deployed, production keeps serving: {f.log_hint('serving')}")
            return None
        time.sleep(2)
    raise HopMissing("deployed_model", "serving", f.log_hint("serving"))


def follow_deployment(f: Follower, reg_after: int, dep_after: int, since: str, why: str) -> dict | None:
    registered = f.training_outcome(reg_after, since, timeout=300)
    if registered is None:
        say("registered_model", f"gate held ({why}): production keeps its version")
        explanation = last_gate_explanation(f.cfg)
        if explanation:
            say("gate", explanation)
        return None
    r = registered["extra"]
    say("registered_model", describe_registered(r))
    if r.get("champion_version"):
        say("gate", last_gate_explanation(f.cfg) or "")
    # A staged rollout waits for live traffic: shadow, then canary (MLOPS_SHADOW_*, MLOPS_CANARY_*).
    deployed = deployment_outcome(f, dep_after, str(r["version"]), registered["timestamp"], timeout=480)
    if deployed is None:
        return None
    for line in describe_rollout(deployed["extra"]):
        say("rollout", line)
    say("deployed_model", describe_deployed(deployed["extra"]))
    return deployed


def served_rows_labelled(cfg: settings.Settings, played: replay.ReplayResult) -> tuple[int, int]:
    """How many of the replay's requests are in the prediction log, and how many of those have their label."""
    import pandas as pd

    from monitoring import inference

    urls = [f["url"] for v in played.versions for f in inference.log_files(v)]
    rows = inference.read_window(urls)
    if rows.empty:
        return 0, 0
    as_of = pd.to_datetime(rows["as_of"], utc=True)
    rows = rows[(as_of >= pd.Timestamp(played.start)) & (as_of < pd.Timestamp(played.end))]
    rows = inference.attach_labels(rows)
    return len(rows), int(rows[LABEL].notna().sum())


class Continuation:
    """The replay's next days in a thread, until `finish` (no drain: it stops at the next push)."""

    def __init__(self, args, from_day: float):
        import io
        import threading

        self.args, self.from_day = args, from_day
        self.stop, self.result, self.out = threading.Event(), None, io.StringIO()
        self.thread = threading.Thread(target=self._run, name="replay-continuation", daemon=True)

    def _run(self) -> None:
        try:
            self.result = replay.run(self.args.replay_month, days=31, speed=self.args.speed, warmup_hours=0,
                                     share=self.args.share, from_day=self.from_day, stop=self.stop,
                                     stream=self.out)
        except BaseException as exc:  # the demo goes on; the line says what happened
            self.result = exc

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        r = self.result
        if isinstance(r, replay.ReplayResult):
            say("replay", f"live traffic went on to {r.end[:16]}: {r.answered} more answered, "
                          f"{sum(r.errors.values())} errors")
        elif r is not None:
            say("replay", f"the continued traffic stopped: {r!r}")


def run(args) -> dict:
    """The demo; returns what it printed at the end, for the benchmarks."""
    cfg = settings.get()
    say("stack", "starting (Airflow, MLflow, model server)")
    stack.up(cfg, later=frozenset({"evidently"}))  # the dashboard's UI comes up meanwhile; the chain needs it not
    say("stack", f"healthy: {cfg.airflow_url}")
    f = Follower(AirflowClient(), cfg)
    marks = {a: f.last_id(a) for a in ("feature_table", "registered_model", "deployed_model", "drift_report")}
    before_version = (f.client.asset_events("deployed_model") or [{"extra": {}}])[-1]["extra"].get("version")

    months = months_to_drop(args.months)
    since = utc_now()
    if months:
        for month in months:
            samples.drop(month)
        say("drop", f"{', '.join(months)} -> {cfg.storage_url}/landing")
        seen = 0
        last = marks["feature_table"]
        while seen < len(months):
            ev = f.wait("feature_table", last, 180, "dataops")
            last = ev["id"]
            seen += flight_files_accepted(ev["extra"])
            say("feature_table", describe_feature_table(ev["extra"]))
        follow_deployment(f, marks["registered_model"], marks["deployed_model"], since, "fresh data")
    else:
        say("drop", "every month is already ingested; going straight to traffic")

    marks = {a: f.last_id(a) for a in ("registered_model", "deployed_model", "drift_report")}
    say("replay", f"{args.replay_month}, first {args.days:g} days at {args.speed:g}x: feeds, requests for "
                  f"{args.share:.0%} of the flights at their time, outcomes as flights arrive; a monitoring "
                  f"window closes after {cfg.monitor_window_days:g} days of departures")
    since = utc_now()  # the drift-triggered training may start while the replay runs
    played = replay.run(args.replay_month, days=args.days, speed=args.speed, share=args.share)
    say("replay", f"{played.answered}/{played.requests} answered, {sum(played.errors.values())} errors, "
                  f"fresh features on {100 * played.fresh_share:.1f}%, p50 {played.p50_ms:.1f} ms "
                  f"p99 {played.p99_ms:.1f} ms"
                  + (f"; stale: {', '.join(f'{v} {n}' for v, n in played.stale_views.items())}"
                     if played.stale_views else ""))
    drift = f.wait("drift_report", marks["drift_report"], 300, "monitoring")
    x = drift["extra"]
    say("drift_report", describe_drift(x))
    resume_day = args.days
    if f.training_waits_for_labels(since, timeout=180):
        say("training", describe_label_wait(f.cfg))
        ff = replay.fast_forward(args.replay_month, args.days, args.resume_day,
                                 outcomes_since=played.last_outcome)
        say("fast-forward", f"the feeds deliver {ff.summary()}: two weeks of labels in seconds (the demo skips "
                            f"those weeks' requests to fit in minutes); live traffic resumes on day "
                            f"{args.resume_day:g}")
        resume_day = args.resume_day
    # Live traffic goes on while training and serving work: a staged rollout judges the new version
    # on it (shadow, then canary). It stops once the redeployment's outcome is known.
    more = Continuation(args, from_day=resume_day)
    more.start()
    try:
        follow_deployment(f, marks["registered_model"], marks["deployed_model"], since, "drift")
    finally:
        more.finish()
    served, labelled = served_rows_labelled(cfg, played)

    latest = f.client.asset_events("deployed_model")
    after_version = latest[-1]["extra"].get("version") if latest else None
    print()
    print(f"Assets view     {cfg.airflow_url}/assets")
    print(f"MLflow model    {cfg.mlflow_tracking_uri}/#/models/{cfg.model_name}")
    print(f"Drift report    {x['report_path']}")
    print(f"Served version  before: {before_version or 'none'}  after: {after_version}")
    print(f"Served rows     {played.answered} answered, {100 * played.fresh_share:.1f}% with fresh features "
          f"(within each view's TTL); {labelled} of the {served} logged have their label")
    print(f"Total           {time.monotonic() - T0:.0f}s")
    return {"replay": played, "served_rows_logged": served, "served_rows_labelled": labelled,
            "version_before": before_version, "version_after": after_version, "total_s": time.monotonic() - T0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.demo")
    parser.add_argument("--months", type=int, default=2, help="how many new months to drop first")
    parser.add_argument("--replay-month", default="2013-07")
    # A monitoring window spans MLOPS_MONITOR_WINDOW_DAYS (7) of departures and closes once a later
    # flight is served: 7.5 days close the first one. Asking about 40% of the flights keeps the
    # requests within what the server answers on two cores at 5400x.
    parser.add_argument("--days", type=float, default=7.5, help="how many days of the month to replay")
    parser.add_argument("--resume-day", type=float, default=21.5,
                        help="when training holds for want of labels, fast-forward the feeds to this day of the "
                             "month and resume the traffic there")
    parser.add_argument("--speed", type=float, default=5400, help="simulated seconds per real second")
    parser.add_argument("--share", type=float, default=0.4, help="share of the flights asked about")
    args = parser.parse_args(argv)
    try:
        run(args)
        return 0
    except HopMissing as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
