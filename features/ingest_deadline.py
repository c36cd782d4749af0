"""The ingest deadline: a file dropped in landing reaches `feature_table` within MLOPS_INGEST_DEADLINE_MINUTES.

Why this is not an Airflow Deadline Alert. A DAG's `DeadlineAlert` measures from a
`DeadlineReference` evaluated when a run is created or queued (Airflow 3.3 offers
DAGRUN_LOGICAL_DATE, DAGRUN_QUEUED_AT, AVERAGE_RUNTIME, FIXED_DATETIME and custom
references evaluated at the same two moments). The dataops DAG is `@continuous`: a run
is queued as soon as the previous one ends and then waits in the landing sensor, for
minutes or days, until a file arrives. So DAGRUN_QUEUED_AT is when the waiting began,
not when the file was dropped: the alert would fire for every idle hour and say nothing
about the file. No reference evaluated at run creation can know when a file will arrive.
And a file dropped while a dataops run is busy (or stuck in retries) is not noticed by any
sensor until that run ends: a deadline on dataops runs cannot see the stuck case at all.

What measures it instead: two marks on storage and a watcher of its own.
- the watcher (`IngestDeadlineTrigger`, the `dataops_deadline` DAG's sensor, in the
  triggerer) lists landing/ every poll and remembers when it first saw each file (by URL
  and size/stamp signature, so a file moved in with an old mtime counts from when it
  appeared): the deadline's start. The memory is in `dataops/ingest_deadline.json` under
  the storage root, so a new run of the watcher keeps it;
- `mark_pending` (dataops' `validate_batch`) writes `dataops/pending/<batch>.json` with
  the batch's files that have accepted rows, once ingested (the file has left landing);
- `clear_pending` (`features.tasks.publish`, in `materialize_online`, the task whose
  success emits `feature_table`) deletes it once the features are online.
A file is overdue when it is still in landing, or in a pending batch, more than the
deadline after it was first seen (a pending file the watcher never saw counts from its
batch's ingestion). Each overdue file is reported once, with where it is stuck; the
watcher's run then sends the alerts (`alerts.send`, kind `deadline_missed`) and the next
run goes on watching. A batch with nothing accepted never reaches `feature_table` and is
not pending: its files were quarantined, which alerts on its own.

Light on purpose (no pandas): the trigger runs in the triggerer and the DAG file imports it.
"""

from __future__ import annotations

import asyncio
import copy
import posixpath
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, StartTriggerArgs, TriggerEvent

import storage
from features.landing import candidate_files

PENDING_DIR = ("dataops", "pending")
STATE = ("dataops", "ingest_deadline.json")
LANDING, BATCH = "landing", "batch"  # where an overdue file is stuck
FORGET_AFTER = timedelta(days=1)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds")


def poll_seconds(minutes: float) -> float:
    """How often the watcher looks: a tenth of the deadline, between 1 s and a minute."""
    return max(1.0, min(60.0, minutes * 6))


# -- the marks dataops writes -------------------------------------------------------------------
def pending_url(store: storage.Storage, batch_id: str) -> str:
    return store.url(*PENDING_DIR, f"{batch_id}.json")


def mark_pending(batch: dict, landing_files: list[str], store: storage.Storage | None = None) -> str | None:
    """Note an ingested batch (`features.ingest` summary of the landing URLs `landing_files`) whose accepted
    rows are on their way to `feature_table`; none: no mark. A retry keeps the first mark's time."""
    store = store or storage.get()
    url_of = {posixpath.basename(u): u for u in landing_files}
    files = [{"name": f["name"], "landing_url": url_of.get(f["name"], f["name"]), "sha256": f["sha256"]}
             for f in batch["files"] if f.get("rows_accepted")]
    if not files:
        return None
    url = pending_url(store, batch["batch_id"])
    if not store.exists(url):
        store.write_json(url, {"batch_id": batch["batch_id"], "ingested_at": _iso(_now()), "files": files})
    return url


def clear_pending(batch_id: str, store: storage.Storage | None = None) -> None:
    """The batch's features are online: its files have reached `feature_table`."""
    store = store or storage.get()
    url = pending_url(store, batch_id)
    if store.exists(url):
        store.fs.rm(store._path(url))


# -- the watcher's check --------------------------------------------------------------------------
def _state(store: storage.Storage) -> dict:
    url = store.url(*STATE)
    state = store.read_json(url) if store.exists(url) else {}
    return {"first_seen": state.get("first_seen", {}), "alerted": state.get("alerted", {})}


def overdue(landing_url: str, minutes: float, now: datetime | None = None,
            store: storage.Storage | None = None) -> list[dict]:
    """The files past the deadline and not reported yet, oldest first. Records when each landing file was
    first seen (the deadline's start); forgets files that reached `feature_table` or left otherwise."""
    store = store or storage.get()
    now = now or _now()
    state = _state(store)
    before = copy.deepcopy(state)
    seen = state["first_seen"]
    in_landing = candidate_files(landing_url)
    for url, sig in in_landing.items():
        if url not in seen or seen[url]["sig"] != list(sig):
            seen[url] = {"sig": list(sig), "at": _iso(now)}
    pending = [store.read_json(i["url"]) for i in store.list_files(store.url(*PENDING_DIR))
               if i["url"].endswith(".json")]
    late = now - timedelta(minutes=minutes)
    found: list[dict] = []
    for url in in_landing:
        since = datetime.fromisoformat(seen[url]["at"])
        found.append({"key": f"{LANDING}|{url}|{seen[url]['at']}", "stage": LANDING, "file": posixpath.basename(url),
                      "url": url, "since": seen[url]["at"], "batch_id": None, "ingested_at": None, "late": since < late})
    for mark in pending:
        ingested = datetime.fromisoformat(mark["ingested_at"])
        for f in mark["files"]:
            first = seen.get(f["landing_url"])
            since = min(ingested, datetime.fromisoformat(first["at"])) if first else ingested
            found.append({"key": f"{BATCH}|{mark['batch_id']}|{f['landing_url']}", "stage": BATCH, "file": f["name"],
                          "url": f["landing_url"], "since": _iso(since), "batch_id": mark["batch_id"],
                          "ingested_at": mark["ingested_at"], "late": since < late})
    # Forget a file a day after it left both landing and the pending marks (a file between the two, moved
    # out of landing and not yet marked, keeps its start); keep only the reports of what is still there.
    referenced = set(in_landing) | {f["landing_url"] for m in pending for f in m["files"]}
    forget = _iso(now - FORGET_AFTER)
    state["first_seen"] = {u: v for u, v in seen.items() if u in referenced or v["at"] > forget}
    state["alerted"] = {k: v for k, v in state["alerted"].items() if k in {f["key"] for f in found}}
    if state != before:
        store.write_json(store.url(*STATE), state)
    due = [{k: v for k, v in f.items() if k != "late"} for f in found if f["late"] and f["key"] not in state["alerted"]]
    return sorted(due, key=lambda f: f["since"])


def mark_alerted(files: list[dict], store: storage.Storage | None = None) -> None:
    """Each file is reported once per stage: a file still in landing, then still in its batch, twice at most."""
    store = store or storage.get()
    state = _state(store)
    state["alerted"].update({f["key"]: _iso(_now()) for f in files})
    store.write_json(store.url(*STATE), state)


def send_alerts(files: list[dict], minutes: float) -> list[str]:
    """One `deadline_missed` alert per overdue file, saying where it is stuck; marks them reported."""
    from alerts import Alert, send

    where = []
    for f in files:
        if f["stage"] == LANDING:
            text = (f"{f['file']} was noticed in the landing zone at {f['since']} and has not been picked up "
                    f"within {minutes:g} minutes: the dataops DAG is paused, busy or stuck in a run, "
                    f"or the triggerer is down")
        else:
            text = (f"{f['file']} (noticed at {f['since']}) was ingested in batch {f['batch_id']} at "
                    f"{f['ingested_at']}, and its features are not online {minutes:g} minutes after it was "
                    f"noticed: the dataops run's write_features or materialize_online has not finished")
        where.append(send(Alert(
            kind="deadline_missed", title=f"deadline missed: {f['file']} has not reached feature_table",
            text=text, fields={"file": f["url"], "stage": f["stage"], "batch_id": f["batch_id"],
                               "noticed_at": f["since"], "minutes": minutes})))
    mark_alerted(files)
    return where


# -- the watcher in the triggerer ---------------------------------------------------------------------
class IngestDeadlineTrigger(BaseTrigger):
    """Fires with the files past the ingest deadline (`overdue`), or with none after `max_wait_seconds`
    (the run ends and the next one goes on watching)."""

    def __init__(self, landing_url: str, minutes: float, max_wait_seconds: float = 6 * 3600):
        super().__init__()
        self.landing_url = landing_url
        self.minutes = minutes
        self.max_wait_seconds = max_wait_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("features.ingest_deadline.IngestDeadlineTrigger",
                {"landing_url": self.landing_url, "minutes": self.minutes, "max_wait_seconds": self.max_wait_seconds})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        loop = asyncio.get_running_loop()
        stop = loop.time() + self.max_wait_seconds
        while True:
            due = await asyncio.to_thread(overdue, self.landing_url, self.minutes)
            if due or loop.time() >= stop:
                if due:
                    self.log.warning("files past the %g-minute ingest deadline: %s", self.minutes,
                                     [f["file"] for f in due])
                yield TriggerEvent({"overdue": due})
                return
            await asyncio.sleep(poll_seconds(self.minutes))


class IngestDeadlineSensor(BaseSensorOperator):
    """Waits in the triggerer for files past the ingest deadline; alerts once per file and returns them."""

    start_trigger_args = StartTriggerArgs(
        trigger_cls="features.ingest_deadline.IngestDeadlineTrigger", trigger_kwargs={},
        next_method="execute_complete", next_kwargs=None, timeout=None)
    start_from_trigger = True

    def __init__(self, *, landing_url: str, minutes: float, max_wait_seconds: float = 6 * 3600, **kwargs):
        kwargs.setdefault("timeout", max_wait_seconds + 3600)
        super().__init__(**kwargs)
        self.landing_url = landing_url
        self.minutes = minutes
        self.max_wait_seconds = max_wait_seconds
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls="features.ingest_deadline.IngestDeadlineTrigger",
            trigger_kwargs={"landing_url": landing_url, "minutes": minutes, "max_wait_seconds": max_wait_seconds},
            next_method="execute_complete", next_kwargs=None, timeout=timedelta(seconds=self.timeout))

    def execute(self, context) -> None:
        # Only reached when the task is not started from the trigger (for example dag.test()).
        self.defer(trigger=IngestDeadlineTrigger(self.landing_url, self.minutes, self.max_wait_seconds),
                   method_name="execute_complete", timeout=timedelta(seconds=self.timeout))

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> list[dict]:
        due = list((event or {}).get("overdue") or [])
        where = send_alerts(due, self.minutes) if due else []
        self.log.info("%d file(s) past the ingest deadline, alerted to %s", len(due), sorted(set(where)))
        return due
