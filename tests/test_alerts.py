"""Alerts reach someone: a real HTTP receiver on a loopback port, or the alerts file when there is none."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

import alerts
import settings
import storage
from support import free_port, reload_settings, use_home


class Receiver:
    """A webhook endpoint: records every JSON body posted to it."""

    def __init__(self, status: int = 200):
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/mlops"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(home, monkeypatch):
    r = Receiver()
    use_home(monkeypatch, home.home, MLOPS_ALERT_WEBHOOK_URL=r.url)
    yield r
    r.close()
    reload_settings()


def alerts_file() -> list[dict]:
    path = settings.get().home.joinpath(*alerts.ALERTS_FILE)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_an_alert_is_posted_as_slack_compatible_json(receiver):
    where = alerts.send(alerts.Alert(kind="rollback", title="serving v7 rolled back", text="smoke test failed",
                                     fields={"version": "7", "previous": "6"}))
    assert where == receiver.url
    body, = receiver.bodies
    assert body["text"] == "[mlops] serving v7 rolled back: smoke test failed"
    assert body["blocks"][0] == {"type": "section", "text": {"type": "mrkdwn",
                                                             "text": "*serving v7 rolled back*\nsmoke test failed"}}
    assert body["blocks"][1]["elements"][0]["text"] == "version: 7 | previous: 6"
    assert body["mlops"]["kind"] == "rollback" and body["mlops"]["fields"] == {"version": "7", "previous": "6"}
    assert alerts_file() == []


def test_without_a_url_the_alert_goes_to_the_alerts_file(home):
    where = alerts.send(alerts.Alert(kind="quarantined", title="t", text="x"))
    assert where.endswith("alerts/alerts.jsonl")
    record, = alerts_file()
    assert (record["kind"], record["title"], record["delivered_to"]) == ("quarantined", "t", "file")


def test_a_webhook_that_fails_loses_nothing(home, monkeypatch):
    use_home(monkeypatch, home.home, MLOPS_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/down")
    alerts.send(alerts.Alert(kind="task_failed", title="training.gate failed", text="boom"))
    record, = alerts_file()
    assert record["title"] == "training.gate failed" and record["delivered_to"].startswith("file (webhook failed")


def test_a_failed_task_names_itself_its_run_and_its_error(receiver):
    ti = SimpleNamespace(dag_id="serving", task_id="rollback", run_id="asset_triggered__x", try_number=1,
                         log_url="http://127.0.0.1:8080/log")
    alerts.on_task_failure({"ti": ti, "exception": RuntimeError("validation failed: p99 400 ms > 1.5 x 100 ms")})
    body, = receiver.bodies
    assert body["mlops"]["kind"] == "task_failed" and body["mlops"]["title"] == "serving.rollback failed"
    assert "validation failed: p99 400 ms" in body["text"]
    assert body["mlops"]["fields"]["run_id"] == "asset_triggered__x"


def test_a_missed_deadline_is_sent_from_the_triggerer_s_event_loop(receiver):
    asyncio.run(alerts.deadline_missed(what="a registered version is not serving", dag_id="serving", minutes=30,
                                       dag_run={"run_id": "r1"}))
    body, = receiver.bodies
    assert body["mlops"]["kind"] == "deadline_missed"
    assert body["text"] == ("[mlops] deadline missed: a registered version is not serving: "
                            "the serving run did not finish within 30 minutes")


def test_a_batch_with_quarantined_input_alerts_with_the_files_and_reasons(receiver, samples_dir):
    from features.ingest import Batch
    from features.tasks import alert_quarantined

    store = storage.get()
    good = store.url("landing", "weather_2013-01.parquet")
    store.write_bytes(good, (samples_dir / "weather_2013-01.parquet").read_bytes())
    bad = store.url("landing", "notes.csv")
    store.write_bytes(bad, b"a,b\n1,2\n")
    batch = Batch("20260101T000000-abcdef").ingest([good, bad])

    assert alert_quarantined(batch) == receiver.url
    body, = receiver.bodies
    assert body["mlops"]["kind"] == "quarantined"
    assert "notes.csv: quarantined, 1 of 1 rows" in body["mlops"]["text"] and "schema:" in body["mlops"]["text"]
    assert body["mlops"]["fields"]["files"] == 1

    clean = Batch("20260101T000100-abcdef").ingest([])
    assert alert_quarantined(clean) is None and len(receiver.bodies) == 1


@pytest.fixture(scope="module")
def dagbag():
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags"))


def test_every_task_of_every_dag_alerts_on_failure(dagbag):
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(isinstance(c, alerts.TaskFailureNotifier) for c in callbacks), f"{dag.dag_id}.{task.task_id}"


def test_the_serving_dag_has_a_deadline_that_alerts(dagbag):
    deadline = dagbag.dags["serving"].deadline
    alert = deadline[0] if isinstance(deadline, list) else deadline
    cfg = settings.get()
    # a staged rollout may wait for its shadow and canary on top of the deployment
    rollout = cfg.shadow_max_minutes + cfg.canary_max_minutes if cfg.rollout == "staged" else 0
    assert alert.interval.total_seconds() == (cfg.deploy_deadline_minutes + rollout) * 60
    assert "alerts.deadline_missed" in str(alert.callback.path if hasattr(alert.callback, "path") else alert.callback)
