"""The inference log: every answered prediction, written in batches for monitoring.

This module owns the log's contract (monitoring reads it through `version_url`,
`COLUMNS` and `FILE_SUFFIX`); it imports pandas only to write, so the monitoring
trigger can use the layout without it.

Requests only append a row to an in-memory buffer (a list append under a lock); a
background thread writes the buffer as parquet when it holds `flush_rows` rows or
`flush_seconds` have passed, one file per model version:
`<storage>/inference/version=<v>/<UTC stamp>-<uuid8>.parquet`, through
`storage.write_bytes` (atomic: a reader never sees half a file). `close()` (called
by the server's lifespan on a clean stop) writes what is left. A failed write keeps
the rows for the next attempt (up to a bound, so a long storage outage cannot
exhaust memory).

Rollout rows (`serving.rollout`): each row's `role` says who made the prediction.
`main` rows were answered by the production model and go where they always went,
`inference/version=<v>/`. Rows of a candidate version go to a subfolder of the
candidate's partition, `inference/version=<v>/role=canary/` (answered by the
candidate for its canary share) and `.../role=shadow/` (scored off the response
path, never answered; the same `request_id` as the production row of the request).
Monitoring lists only the files directly under a version's folder (its production
traffic), so rollout rows never enter its windows. `model_ms` is the model's own
`predict_proba` time (of the whole batch for a batch request or a shadow batch);
a shadow row's `baseline_ms` is production's time on the same batch, timed beside
it, so the shadow's latency compares with production's on the same rows.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timezone

from typing import TYPE_CHECKING

import storage
from features.names import MODEL_FEATURES, VIEW_NAMES

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

INFERENCE_DIR = "inference"
FILE_SUFFIX = ".parquet"
_TS = "datetime64[us, UTC]"
AS_OF = "as_of"  # the time the prediction was asked at (the request's, else when it arrived)
DEPARTURE = "sched_dep_ts"  # the flight's scheduled departure: monitoring windows span these
REQUEST_TIME = "request_time"  # when the request arrived
KEY_COLUMNS = ["request_id", REQUEST_TIME, AS_OF, "model_name", "model_version", "carrier", "flight", "tailnum",
               "origin", "dest", "route", DEPARTURE, "flight_id"]
PROBABILITY, PREDICTION = "probability", "prediction"  # the model's output, and the decision at its threshold
ROLE, MODEL_MS, BASELINE_MS = "role", "model_ms", "baseline_ms"
MAIN, CANARY, SHADOW = "main", "canary", "shadow"  # the values of `role`
ROLLOUT_ROLES = (CANARY, SHADOW)


def feature_ts_column(view: str) -> str:
    """The timestamp of the view's value the online store held (NaT: no row for the entity)."""
    return f"{view}__feature_ts"


def feature_age_column(view: str) -> str:
    """Seconds from that timestamp to the as-of time (negative: the value was from after it)."""
    return f"{view}__age_s"


FRESHNESS_COLUMNS = [c for v in VIEW_NAMES for c in (feature_ts_column(v), feature_age_column(v))]
COLUMNS = KEY_COLUMNS + MODEL_FEATURES + [PROBABILITY, PREDICTION, "latency_ms", ROLE, MODEL_MS, BASELINE_MS] + FRESHNESS_COLUMNS


def freshness(stamps: dict[str, datetime | None], as_of: datetime) -> dict[str, object]:
    """The freshness columns of one served row from the online read's per-view timestamps."""
    out: dict[str, object] = {}
    for view in VIEW_NAMES:
        stamp = stamps.get(view)
        out[feature_ts_column(view)] = stamp
        out[feature_age_column(view)] = (as_of - stamp).total_seconds() if stamp is not None else None
    return out


def version_url(version: str, store: storage.Storage | None = None, role: str | None = None) -> str:
    """The folder of one model version's log files: `<storage>/inference/version=<v>`; a rollout
    role's rows (canary, shadow) are in its subfolder `role=<role>`."""
    parts = [INFERENCE_DIR, f"version={version}"] + ([f"role={role}"] if role and role != MAIN else [])
    return (store or storage.get()).url(*parts)


def file_name(written_at: datetime) -> str:
    """`<UTC stamp>-<uuid8>.parquet`: name order is write order, names never collide."""
    return f"{written_at.astimezone(timezone.utc):%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:8]}{FILE_SUFFIX}"


def to_frame(rows: list[dict]) -> "pd.DataFrame":
    """Rows -> the contract's columns and types."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("request_time", AS_OF, "sched_dep_ts", *(feature_ts_column(v) for v in VIEW_NAMES)):
        df[col] = pd.to_datetime(df[col], utc=True).astype(_TS)
    for col in ("request_id", "model_name", "model_version", "carrier", "origin", "dest", "route", "flight_id",
                "tailnum", ROLE):
        df[col] = df[col].astype("string")
    df["flight"] = df["flight"].astype("int64")
    df[PREDICTION] = df[PREDICTION].astype("int64")
    for col in [*MODEL_FEATURES, PROBABILITY, "latency_ms", MODEL_MS, BASELINE_MS, *(feature_age_column(v) for v in VIEW_NAMES)]:
        df[col] = df[col].astype("float64")
    return df


class InferenceLog:
    def __init__(self, flush_rows: int, flush_seconds: float, store: storage.Storage | None = None):
        self.flush_rows = max(1, flush_rows)
        self.flush_seconds = flush_seconds
        self.store = store or storage.get()
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.max_pending = max(100_000, 100 * self.flush_rows)
        self.files_written = 0
        self.rows_written = 0
        self.rows_dropped = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    def append(self, rows: list[dict]) -> None:
        with self._lock:
            self._rows.extend(rows)
            full = len(self._rows) >= self.flush_rows
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._rows)

    def flush(self) -> int:
        """Write everything buffered now, one file per model version and role. Returns the rows written."""
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            written, failed = 0, []
            for (version, role), part in _by_version(rows).items():
                try:
                    self._write(version, role, part)
                    written += len(part)
                except Exception:
                    log.exception("inference log: writing %d rows of version %s failed; kept for the next flush",
                                  len(part), version)
                    failed.extend(part)
            if failed:
                self._requeue(failed)
            return written

    def _requeue(self, rows: list[dict]) -> None:
        with self._lock:
            self._rows[:0] = rows
            excess = len(self._rows) - self.max_pending
            if excess > 0:  # storage has been failing for a long time: bound the memory
                del self._rows[:excess]
                self.rows_dropped += excess
                log.error("inference log: dropped the %d oldest unwritten rows", excess)

    def close(self) -> None:
        """Stop the background thread and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(timeout=max(0.05, self.flush_seconds - (time.monotonic() - last)))
            self._wake.clear()
            if self._stop.is_set():
                return
            if len(self._rows) >= self.flush_rows or time.monotonic() - last >= self.flush_seconds:
                self.flush()
                last = time.monotonic()

    def _write(self, version: str, role: str, rows: list[dict]) -> None:
        url = f"{version_url(version, self.store, role)}/{file_name(datetime.now(timezone.utc))}"
        self.store.write_parquet(url, to_frame(rows))
        self.files_written += 1
        self.rows_written += len(rows)
        log.info("inference log: %d rows -> %s", len(rows), url)


def _by_version(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    parts: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        parts.setdefault((str(row["model_version"]), row.get(ROLE) or MAIN), []).append(row)
    return parts
