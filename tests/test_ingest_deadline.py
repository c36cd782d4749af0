"""The ingest deadline: a file noticed in landing that has not reached `feature_table` within
MLOPS_INGEST_DEADLINE_MINUTES alerts once, saying where it is stuck (`features.ingest_deadline`).

Real storage, real batches (`features.ingest`), the real publish step, and real alerts
delivered to a loopback webhook; the last test runs the `dataops_deadline` DAG with
`dag.test()`, its sensor's trigger included.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import storage
from features import ingest_deadline as deadline
from support import reload_settings
from test_alerts import Receiver, receiver  # noqa: F401  (the fixture)

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def landing() -> str:
    return storage.get().url("landing")


def drop(samples_dir, name: str = "weather_2013-01.parquet") -> str:
    store = storage.get()
    url = store.url("landing", name)
    store.write_bytes(url, (samples_dir / name).read_bytes())
    return url


def test_a_file_left_in_landing_past_the_deadline_alerts_once(receiver, samples_dir):
    url = drop(samples_dir)
    assert deadline.overdue(landing(), 30, now=T0) == []  # first seen now: the deadline's start
    assert deadline.overdue(landing(), 30, now=T0 + timedelta(minutes=29)) == []

    late = deadline.overdue(landing(), 30, now=T0 + timedelta(minutes=31))

    assert [(f["stage"], f["url"], f["since"]) for f in late] == [("landing", url, T0.isoformat())]
    assert deadline.send_alerts(late, 30) == [receiver.url]
    body, = receiver.bodies
    assert body["mlops"]["kind"] == "deadline_missed"
    assert body["mlops"]["title"] == "deadline missed: weather_2013-01.parquet has not reached feature_table"
    assert body["mlops"]["text"].startswith(
        f"weather_2013-01.parquet was noticed in the landing zone at {T0.isoformat()} and has not been picked up "
        "within 30 minutes")
    assert body["mlops"]["fields"]["stage"] == "landing" and body["mlops"]["fields"]["noticed_at"] == T0.isoformat()
    # Reported once.
    assert deadline.overdue(landing(), 30, now=T0 + timedelta(minutes=45)) == []


def test_an_ingested_batch_whose_features_are_not_online_alerts_and_a_published_one_does_not(receiver, samples_dir):
    from features.ingest import Batch
    from features.tasks import publish

    slow_url, quick_url = drop(samples_dir), drop(samples_dir, "weather_2013-02.parquet")
    deadline.overdue(landing(), 30, now=T0)  # both noticed at T0
    slow = Batch("20261130T120500-aaaaaa").ingest([slow_url])
    quick = Batch("20261130T120600-bbbbbb").ingest([quick_url])
    assert deadline.mark_pending(slow, [slow_url]) and deadline.mark_pending(quick, [quick_url])
    publish(quick, {})  # its features went online: the deadline is met

    late = deadline.overdue(landing(), 30, now=T0 + timedelta(minutes=31))

    assert [(f["stage"], f["batch_id"], f["since"]) for f in late] == [("batch", slow["batch_id"], T0.isoformat())]
    deadline.send_alerts(late, 30)
    body, = receiver.bodies
    assert body["mlops"]["title"] == "deadline missed: weather_2013-01.parquet has not reached feature_table"
    assert f"was ingested in batch {slow['batch_id']}" in body["mlops"]["text"]
    assert "write_features or materialize_online has not finished" in body["mlops"]["text"]
    # Published late: nothing more to say, and nothing is kept about it.
    publish(slow, {})
    assert deadline.overdue(landing(), 30, now=T0 + timedelta(minutes=60)) == []
    assert storage.get().list_files(storage.get().url(*deadline.PENDING_DIR)) == []


def test_a_batch_with_nothing_accepted_is_not_waited_for(home):
    store = storage.get()
    bad = store.url("landing", "notes.csv")
    store.write_bytes(bad, b"a,b\n1,2\n")
    from features.ingest import Batch

    batch = Batch("20261130T120000-cccccc").ingest([bad])
    assert deadline.mark_pending(batch, [bad]) is None
    assert deadline.overdue(landing(), 30, now=T0 + timedelta(days=1)) == []


def test_the_dataops_deadline_dag_alerts_a_file_nobody_picks_up(airflow_db, receiver, samples_dir, monkeypatch):
    """The DAG as parsed, its sensor's trigger run by dag.test(): a 1.2-second deadline, a file in landing."""
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("MLOPS_INGEST_DEADLINE_MINUTES", "0.02")
    reload_settings()
    url = drop(samples_dir)
    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags" / "dataops_deadline.py"))
    dag = bag.dags["dataops_deadline"]

    run = dag.test()

    assert str(run.state).endswith("success"), run.state
    body, = receiver.bodies
    assert body["mlops"]["kind"] == "deadline_missed" and body["mlops"]["fields"]["file"] == url
    assert "has not been picked up within 0.02 minutes" in body["mlops"]["text"]
