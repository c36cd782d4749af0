"""One landing batch: hash, de-duplicate, validate, quarantine, stage accepted rows.

Every input row ends either accepted (staged for the feature step) or in
quarantine with a reason. The work is recorded in a manifest as it goes, so a
retried task picks up where the last attempt stopped instead of losing files.

Layout under the storage root:
    landing/                         users drop files here
    processed/<batch>__<name>        every accepted input file, renamed by batch id
    processed/_ledger/<sha256>.json  content hashes already ingested
    processed/_duplicates/...        re-dropped content, moved aside
    quarantine/<batch>__<name>[.rows.parquet] + .reason.json
    staging/<batch>/                 accepted rows, typed, for the feature step
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd

import storage
from features import validation

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _writable(df: pd.DataFrame) -> pd.DataFrame:
    """Rejected rows may hold mixed types; make object columns strings so parquet accepts them."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    return out


# -- what becomes of one landing file: decided first, from the ledger and the validation ---------
DUPLICATE = "duplicate"  # content already ingested (another batch, or another name in this one)
PROCESSING_ERROR = "processing_error"  # validation itself failed: a bug must not lose the file
QUARANTINED_WHOLE = "quarantined_whole"  # unreadable, no known schema, or empty
ACCEPTED = "accepted"  # some rows valid; the rejected ones, if any, are quarantined
NO_VALID_ROWS = "no_valid_rows"  # every row rejected: the file goes to quarantine


@dataclass(frozen=True)
class Outcome:
    """What becomes of one landing file, decided before anything is written (`decide`)."""

    kind: str  # one of the five above
    seen: dict | None = None  # DUPLICATE: the ledger record of the content's first ingestion
    result: validation.ValidationResult | None = None  # QUARANTINED_WHOLE, ACCEPTED, NO_VALID_ROWS
    reason: str | None = None  # PROCESSING_ERROR and QUARANTINED_WHOLE: why


def is_duplicate(seen: dict | None, batch_id: str, name: str) -> bool:
    """Whether the ledger says this content was ingested before.

    Same content from an earlier batch, or under another name in this one, is a duplicate.
    Same batch and name is this very file on a retried attempt: it is processed again.
    """
    return seen is not None and (seen["batch_id"] != batch_id or seen["file"] != name)


def validated(name: str, data: bytes) -> validation.ValidationResult | str:
    """The validation result, or the traceback when validation itself raised."""
    try:
        return validation.validate(name, data)
    except Exception:  # a bug must not lose the file: it is quarantined with the traceback
        return traceback.format_exc()


def decide(batch_id: str, name: str, seen: dict | None,
           result: validation.ValidationResult | str | None) -> Outcome:
    """The file's outcome, from its ledger record and its validation (None when not validated).

    Pure: nothing is read or written here.
    """
    if is_duplicate(seen, batch_id, name):
        return Outcome(DUPLICATE, seen=seen)
    if result is None:
        raise ValueError(f"{name}: a file that is not a duplicate must be validated")
    if isinstance(result, str):
        return Outcome(PROCESSING_ERROR, reason="processing error:\n" + result)
    if result.file_error:
        return Outcome(QUARANTINED_WHOLE, result=result, reason=result.file_error)
    return Outcome(ACCEPTED if result.rows_accepted else NO_VALID_ROWS, result=result)


class Batch:
    def __init__(self, batch_id: str, store: storage.Storage | None = None):
        self.batch_id = batch_id
        self.store = store or storage.get()
        self.manifest_url = self.store.url("staging", batch_id, "manifest.json")

    def _manifest(self) -> dict:
        if self.store.exists(self.manifest_url):
            return self.store.read_json(self.manifest_url)
        return {"batch_id": self.batch_id, "files": {}}

    def _ledger_url(self, sha: str) -> str:
        return self.store.url("processed", "_ledger", f"{sha}.json")

    def _ingest_one(self, url: str, data: bytes, sha: str) -> dict:
        """Decide the file's outcome, then write what that outcome needs; returns its manifest entry."""
        name = posixpath.basename(url)
        ledger_url = self._ledger_url(sha)
        seen = self.store.read_json(ledger_url) if self.store.exists(ledger_url) else None
        result = None if is_duplicate(seen, self.batch_id, name) else validated(name, data)
        outcome = decide(self.batch_id, name, seen, result)
        record = {
            DUPLICATE: self._record_duplicate,
            PROCESSING_ERROR: self._quarantine_whole,
            QUARANTINED_WHOLE: self._quarantine_whole,
            ACCEPTED: self._accept,
            NO_VALID_ROWS: self._quarantine_no_valid_rows,
        }[outcome.kind]
        return record(outcome, name, sha)

    # -- one writer per outcome ------------------------------------------------------------------
    def _record_duplicate(self, outcome: Outcome, name: str, sha: str) -> dict:
        """The ledger notes the re-drop; the file is moved aside to processed/_duplicates/."""
        seen = outcome.seen
        duplicates = [*seen.get("duplicates", []), {"file": name, "batch_id": self.batch_id, "at": _now()}]
        self.store.write_json(self._ledger_url(sha), {**seen, "duplicates": duplicates})
        return {"status": "duplicate", "duplicate_of": seen["batch_id"], "rows_in": 0, "rows_accepted": 0,
                "rows_quarantined": 0,
                "move_to": self.store.url("processed", "_duplicates", f"{self.batch_id}__{name}")}

    def _quarantine_whole(self, outcome: Outcome, name: str, sha: str) -> dict:
        """The whole file goes to quarantine, with a reason file beside it."""
        rows_in = outcome.result.rows_in if outcome.result is not None else 0
        target = self.store.url("quarantine", f"{self.batch_id}__{name}")
        self.store.write_json(
            target + ".reason.json",
            {"file": name, "batch_id": self.batch_id, "sha256": sha, "rows_in": rows_in,
             "rows_quarantined": rows_in, "reason": outcome.reason, "quarantined_at": _now()},
        )
        return {"status": "quarantined", "rows_in": rows_in, "rows_accepted": 0,
                "rows_quarantined": rows_in, "reason": outcome.reason, "move_to": target}

    def _accept(self, outcome: Outcome, name: str, sha: str) -> dict:
        """Accepted rows staged for the feature step, rejected rows quarantined, the content in the ledger."""
        result = outcome.result
        staged = self.store.url("staging", self.batch_id, f"{result.kind}__{sha[:12]}.parquet")
        self.store.write_parquet(staged, result.accepted)
        ts = result.accepted["time_hour"]
        entry = {**self._counts(result), "status": "accepted",
                 "move_to": self.store.url("processed", f"{self.batch_id}__{name}"), "staged": staged,
                 "event_time_min": ts.min().isoformat(), "event_time_max": ts.max().isoformat()}
        entry.update(self._quarantine_rows(result, name, sha))
        self.store.write_json(self._ledger_url(sha), {"sha256": sha, "batch_id": self.batch_id, "file": name,
                                                      "at": _now()})
        return entry

    def _quarantine_no_valid_rows(self, outcome: Outcome, name: str, sha: str) -> dict:
        """Every row rejected: the rows are quarantined with their reasons, the file beside them."""
        result = outcome.result
        entry = {**self._counts(result), "status": "quarantined", "reason": "no valid rows",
                 "move_to": self.store.url("quarantine", f"{self.batch_id}__{name}")}
        entry.update(self._quarantine_rows(result, name, sha))
        return entry

    @staticmethod
    def _counts(result: validation.ValidationResult) -> dict:
        return {"kind": result.kind, "rows_in": result.rows_in, "rows_accepted": result.rows_accepted,
                "rows_quarantined": result.rows_rejected}

    def _quarantine_rows(self, result: validation.ValidationResult, name: str, sha: str) -> dict:
        """The rejected rows (each with its reason) and a reason file; their manifest keys, if any."""
        if not result.rows_rejected:
            return {}
        rows_url = self.store.url("quarantine", f"{self.batch_id}__{name}.rows.parquet")
        self.store.write_parquet(rows_url, _writable(result.rejected))
        self.store.write_json(
            rows_url + ".reason.json",
            {"file": name, "batch_id": self.batch_id, "sha256": sha, "rows_in": result.rows_in,
             "rows_quarantined": result.rows_rejected, "reason_counts": result.details["reason_counts"],
             "reason": "rows failed validation; each row's reason is in its `reason` column",
             "quarantined_at": _now()},
        )
        return {"quarantined_rows_at": rows_url, "reason_counts": result.details["reason_counts"]}

    def ingest(self, file_urls: list[str]) -> dict:
        """Process the landing files; returns the batch summary (also kept in the manifest)."""
        manifest = self._manifest()
        for url in file_urls:
            name = posixpath.basename(url)
            entry = manifest["files"].get(url)
            if entry is None:
                if not self.store.exists(url):
                    log.warning("%s is gone from landing and was not ingested by this batch; skipping", url)
                    continue
                data = self.store.read_bytes(url)
                sha = hashlib.sha256(data).hexdigest()
                entry = {"name": name, "sha256": sha, **self._ingest_one(url, data, sha)}
                manifest["files"][url] = entry
                self.store.write_json(self.manifest_url, manifest)
            if self.store.exists(url):  # the move is last, so a retry after a crash redoes only it
                self.store.move(url, entry["move_to"])
            log.info(
                "%s: %s, rows in %d = accepted %d + quarantined %d%s",
                name, entry["status"], entry["rows_in"], entry["rows_accepted"], entry["rows_quarantined"],
                f" ({entry['reason'].splitlines()[0]})" if entry.get("reason") else "",
            )
        summary = summarize(self.batch_id, manifest)
        log.info(
            "batch %s: rows in %d = accepted %d + quarantined %d (%d file(s))",
            self.batch_id, summary["rows_in"], summary["rows_accepted"], summary["rows_quarantined"],
            len(summary["files"]),
        )
        return summary


def summarize(batch_id: str, manifest: dict) -> dict:
    files = list(manifest["files"].values())
    accepted = [f for f in files if f["status"] == "accepted"]
    hashes = sorted(f["sha256"] for f in accepted)
    return {
        "batch_id": batch_id,
        "content_hash": hashlib.sha256("".join(hashes).encode()).hexdigest() if hashes else None,
        "files": [
            {k: f.get(k) for k in ("name", "kind", "sha256", "status", "rows_in", "rows_accepted",
                                   "rows_quarantined", "move_to", "staged", "reason", "duplicate_of",
                                   "quarantined_rows_at", "event_time_min", "event_time_max")
             if f.get(k) is not None}
            for f in files
        ],
        "rows_in": sum(f["rows_in"] for f in files),
        "rows_accepted": sum(f["rows_accepted"] for f in files),
        "rows_quarantined": sum(f["rows_quarantined"] for f in files),
        "event_time_min": min((f["event_time_min"] for f in accepted), default=None),
        "event_time_max": max((f["event_time_max"] for f in accepted), default=None),
    }


def batch_id_for(run_id: str, when: datetime) -> str:
    """A stable, readable batch id for one DAG run: retries of the run get the same one."""
    return f"{when.astimezone(timezone.utc):%Y%m%dT%H%M%S}-{hashlib.sha1(run_id.encode()).hexdigest()[:6]}"
