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


class Batch:
    def __init__(self, batch_id: str, store: storage.Storage | None = None):
        self.batch_id = batch_id
        self.store = store or storage.get()
        self.manifest_url = self.store.url("staging", batch_id, "manifest.json")

    def _manifest(self) -> dict:
        if self.store.exists(self.manifest_url):
            return self.store.read_json(self.manifest_url)
        return {"batch_id": self.batch_id, "files": {}}

    def _quarantine_whole(self, url: str, name: str, sha: str, rows_in: int, reason: str) -> dict:
        target = self.store.url("quarantine", f"{self.batch_id}__{name}")
        self.store.write_json(
            target + ".reason.json",
            {"file": name, "batch_id": self.batch_id, "sha256": sha, "rows_in": rows_in,
             "rows_quarantined": rows_in, "reason": reason, "quarantined_at": _now()},
        )
        return {"status": "quarantined", "rows_in": rows_in, "rows_accepted": 0,
                "rows_quarantined": rows_in, "reason": reason, "move_to": target}

    def _ingest_one(self, url: str, data: bytes, sha: str) -> dict:
        name = posixpath.basename(url)
        ledger_url = self.store.url("processed", "_ledger", f"{sha}.json")
        if self.store.exists(ledger_url):
            seen = self.store.read_json(ledger_url)
            # Same content from an earlier batch, or under another name in this one.
            # (Same batch and name is this file on a retried attempt: process it again.)
            if seen["batch_id"] != self.batch_id or seen["file"] != name:
                target = self.store.url("processed", "_duplicates", f"{self.batch_id}__{name}")
                seen.setdefault("duplicates", []).append({"file": name, "batch_id": self.batch_id, "at": _now()})
                self.store.write_json(ledger_url, seen)
                return {"status": "duplicate", "duplicate_of": seen["batch_id"], "rows_in": 0,
                        "rows_accepted": 0, "rows_quarantined": 0, "move_to": target}
        try:
            result = validation.validate(name, data)
        except Exception:  # a bug must not lose the file: quarantine it with the traceback
            return self._quarantine_whole(url, name, sha, 0, "processing error:\n" + traceback.format_exc())
        if result.file_error:
            return self._quarantine_whole(url, name, sha, result.rows_in, result.file_error)

        entry = {
            "status": "accepted", "kind": result.kind, "rows_in": result.rows_in,
            "rows_accepted": result.rows_accepted, "rows_quarantined": result.rows_rejected,
            "move_to": self.store.url("processed", f"{self.batch_id}__{name}"),
        }
        if result.rows_accepted:
            staged = self.store.url("staging", self.batch_id, f"{result.kind}__{sha[:12]}.parquet")
            self.store.write_parquet(staged, result.accepted)
            entry["staged"] = staged
            ts = result.accepted["time_hour"]
            entry["event_time_min"] = ts.min().isoformat()
            entry["event_time_max"] = ts.max().isoformat()
        else:
            entry["status"] = "quarantined"
            entry["reason"] = "no valid rows"
        if result.rows_rejected:
            rows_url = self.store.url("quarantine", f"{self.batch_id}__{name}.rows.parquet")
            self.store.write_parquet(rows_url, _writable(result.rejected))
            self.store.write_json(
                rows_url + ".reason.json",
                {"file": name, "batch_id": self.batch_id, "sha256": sha, "rows_in": result.rows_in,
                 "rows_quarantined": result.rows_rejected, "reason_counts": result.details["reason_counts"],
                 "reason": "rows failed validation; each row's reason is in its `reason` column",
                 "quarantined_at": _now()},
            )
            entry["quarantined_rows_at"] = rows_url
            entry["reason_counts"] = result.details["reason_counts"]
        if not result.rows_accepted:
            entry["move_to"] = self.store.url("quarantine", f"{self.batch_id}__{name}")
        else:
            self.store.write_json(
                ledger_url, {"sha256": sha, "batch_id": self.batch_id, "file": name, "at": _now()}
            )
        return entry

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
