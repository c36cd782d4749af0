"""Reading the prediction log the model server writes (its contract: `serving.inference_log`).

    <storage>/inference/version=<model_version>/<utc-stamp>-<uuid8>.parquet

Files are written whole (atomic) and never change, so a file's row count is
read once from its parquet footer (no data pages) and cached by URL: the sensor
polls cheaply however big the log grows. pandas is only imported by the
functions that read rows, never by the sensor's counting path.
"""

from __future__ import annotations

import hashlib
import posixpath
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import storage
from features.names import LABEL
from monitoring import state
from serving.inference_log import DEPARTURE, FILE_SUFFIX, REQUEST_TIME, version_url

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

IGNORED_SUFFIXES = (".tmp", ".part")


def _modified(info: dict) -> datetime | None:
    """When a listed file was written: `mtime` (epoch seconds) locally, `LastModified` on S3."""
    value = info.get("mtime") or info.get("LastModified")
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return None


def log_files(version: str) -> list[dict]:
    """The version's complete log files, oldest name first: {url, name, modified}."""
    out = []
    for info in storage.get().list_files(version_url(version)):
        name = posixpath.basename(info["url"])
        if name.startswith((".", "_")) or name.endswith(IGNORED_SUFFIXES) or not name.endswith(FILE_SUFFIX):
            continue
        out.append({"url": info["url"], "name": name, "modified": _modified(info)})
    return out


def row_count(url: str, cache: dict[str, int]) -> int:
    """Rows in one log file, from its footer; cached because log files never change."""
    if url not in cache:
        import pyarrow.parquet as pq

        store = storage.get()
        with store.fs.open(store._path(url), "rb") as fh:
            cache[url] = pq.ParquetFile(fh).metadata.num_rows
    return cache[url]


def departures(url: str, cache: dict, since_us: int | None = None) -> "np.ndarray":
    """The scheduled departures (µs since the epoch, `monitoring.windows`) of one log file's rows requested
    at or after `since_us` (the version's baseline: the serving DAG's validation and smoke requests before
    it are not traffic). Only those two columns are read, once per file and baseline."""
    key = (url, since_us)
    if key not in cache:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from monitoring.windows import NAT

        store = storage.get()
        with store.fs.open(store._path(url), "rb") as fh:
            table = pq.read_table(fh, columns=[DEPARTURE, REQUEST_TIME])
        as_us = lambda name: pc.fill_null(table.column(name).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()),  # noqa: E731
                                          NAT)
        deps = np.asarray(as_us(DEPARTURE).to_numpy(), dtype=np.int64)
        if since_us is not None:
            deps = deps[np.asarray(as_us(REQUEST_TIME).to_numpy(), dtype=np.int64) >= since_us]
        cache[key] = deps
    return cache[key]


def request_departures(rows: "pd.DataFrame") -> "pd.Series":
    """The served rows' scheduled departures as ISO-comparable UTC strings (`monitoring.windows.iso`)."""
    import pandas as pd

    dep = pd.to_datetime(rows[DEPARTURE], utc=True)
    return dep.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").where(dep.notna(), "")


def departure_cut(rows: "pd.DataFrame", end: str, since: str | None = None) -> "pd.Series":
    """Which rows of a file a window judges: departing before `end` and, for a file read before, from its
    earlier cut `since` on. A row without a departure is judged by the first window that reads it."""
    import pandas as pd

    dep = pd.to_datetime(rows[DEPARTURE], utc=True)
    keep = dep.isna() | (dep < pd.Timestamp(end))
    if since is not None:
        keep &= dep >= pd.Timestamp(since)  # False for NaT: those went with the window that cut the file
    return keep


def new_files(model_name: str, version: str, cache: dict[str, int]) -> list[tuple[str, int]]:
    """(url, rows) of the version's log files not yet reported and written since its baseline."""
    seen = state.consumed_files(state.load(model_name), version)
    baseline = state.load_baseline(model_name, version)
    since = datetime.fromisoformat(baseline["deployed_at"]) if baseline else None
    out = []
    for f in log_files(version):
        if f["name"] in seen:
            continue
        if since is not None and f["modified"] is not None and f["modified"] < since:
            continue
        out.append((f["url"], row_count(f["url"], cache)))
    return out


def read_window(urls: list[str]) -> "pd.DataFrame":
    """The rows of the given log files, in file order."""
    import pandas as pd

    store = storage.get()
    frames = [store.read_parquet(u) for u in urls]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def since_baseline(rows: "pd.DataFrame", model_name: str, version: str) -> "pd.DataFrame":
    """The rows requested at or after the version's baseline (its deployment), by each row's request time.

    A log file can hold rows from before the deployment (validation and smoke requests
    flushed with the first traffic): the file filter of `new_files` cannot drop them.
    """
    baseline = state.load_baseline(model_name, version)
    if baseline is None or rows.empty or "request_time" not in rows:
        return rows
    since = datetime.fromisoformat(baseline["deployed_at"])
    return rows[request_times(rows) >= since].reset_index(drop=True)


def window_id(urls: list[str], times: "pd.Series | None" = None) -> str:
    """`<first request>-<last request>-<hash of the files>`: sorts by time, same files -> same id."""
    digest = hashlib.sha1("\n".join(sorted(posixpath.basename(u) for u in urls)).encode()).hexdigest()[:6]
    if times is None or not times.notna().any():
        return f"files-{digest}"
    return f"{times.min():%Y%m%dT%H%M%SZ}-{times.max():%Y%m%dT%H%M%SZ}-{digest}"


def request_times(rows: "pd.DataFrame") -> "pd.Series":
    import pandas as pd

    return pd.to_datetime(rows["request_time"], utc=True) if "request_time" in rows else pd.Series(dtype=object)


def attach_labels(rows: "pd.DataFrame") -> "pd.DataFrame":
    """The served rows with `is_late` from the labelled flights table (NaN until the label arrives)."""
    import pyarrow.dataset as ds

    from features.store import FLIGHTS_TABLE, read_offline_table

    out = rows.copy()
    ids = out["flight_id"].dropna().astype(str).unique().tolist() if "flight_id" in out else []
    labels = read_offline_table(FLIGHTS_TABLE, filters=ds.field("flight_id").isin(ids)) if ids else None
    if labels is None or labels.empty:
        out[LABEL] = float("nan")
        return out
    known = labels.drop_duplicates("flight_id", keep="last").set_index("flight_id")[LABEL]
    out[LABEL] = out["flight_id"].astype(str).map(known).astype("float64")
    return out
