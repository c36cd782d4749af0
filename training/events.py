"""Which asset events started a training run, and why.

Airflow hands a consumer every event queued since its last run, per asset a list
(not reliably ordered: it is sorted oldest first here). Several dropped batches
(or a batch and a drift report) can start one run, so every event is kept; the
registered model then names exactly the data and reports behind it.

The events in `triggering_asset_events` carry no database id in Airflow 3.3. The
ids come from the same events read through the task's inlets (`inlet_events`,
which do carry ids), matched on timestamp and source task. Plain objects with an
`id` attribute (tests, or a later Airflow) are used as they are.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)

FRESH_DATA = "fresh_data"
DRIFT = "drift"
MANUAL = "manual"  # no triggering event: started by hand, or by dag.test()

# The keys of each asset's extra worth keeping in the lineage (datasets.FeatureTableExtra, DriftReportExtra).
FEATURE_TABLE_KEYS = ("batch_id", "content_hash", "rows_accepted", "event_time_min", "event_time_max")
DRIFT_REPORT_KEYS = ("report_path", "drift_share", "drifted_columns", "quality", "model_version", "window")


def _iso(ts: Any) -> str:
    """UTC ISO text with microseconds, so that text order is time order."""
    if isinstance(ts, datetime):
        ts = ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
        return ts.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return str(ts)


def _match_key(event: Any) -> tuple:
    return (
        _iso(event.timestamp),
        getattr(event, "source_dag_id", None),
        getattr(event, "source_run_id", None),
        getattr(event, "source_task_id", None),
    )


def event_ids(triggering: list, stored: Iterable) -> list[int | None]:
    """The database id of each triggering event: its own `id`, else the stored event that matches it."""
    by_key = {_match_key(e): e.id for e in stored}
    ids = []
    for event in triggering:
        event_id = getattr(event, "id", None)
        if event_id is None:
            event_id = by_key.get(_match_key(event))
        if event_id is None:
            log.warning("no stored event matches the triggering event %s; its id stays unknown", _match_key(event))
        ids.append(event_id)
    return ids


def event_record(event: Any, event_id: int | None, keys: tuple[str, ...]) -> dict:
    extra = dict(event.extra or {})
    return {
        "id": event_id,
        "timestamp": _iso(event.timestamp),
        "source_dag_id": getattr(event, "source_dag_id", None),
        "source_run_id": getattr(event, "source_run_id", None),
        **{key: extra.get(key) for key in keys},
    }


def _stored_events(inlet_events: Any, asset: Any, triggering: list) -> list:
    """The stored events of `asset` in the time span of `triggering` (bounds inclusive)."""
    if inlet_events is None or not triggering or all(getattr(e, "id", None) is not None for e in triggering):
        return []
    stamps = sorted(_iso(e.timestamp) for e in triggering)
    return list(inlet_events[asset].after(stamps[0]).before(stamps[-1]))


def trigger_reason(feature_table_events: list, drift_report_events: list) -> str:
    """Drift wins when both kinds arrived: the drift rules (window, gate) must apply."""
    if drift_report_events:
        return DRIFT
    if feature_table_events:
        return FRESH_DATA
    return MANUAL


def read_trigger(triggering_asset_events: Mapping | None, inlet_events: Any = None) -> dict:
    """Every triggering event of both assets, with ids, and the reason of the run."""
    from datasets import drift_report, feature_table

    triggering_asset_events = triggering_asset_events or {}
    records = {}
    for asset, keys in ((feature_table, FEATURE_TABLE_KEYS), (drift_report, DRIFT_REPORT_KEYS)):
        # Airflow does not order a run's consumed events: put them oldest first here.
        events = sorted(triggering_asset_events.get(asset) or [], key=lambda e: _iso(e.timestamp))
        ids = event_ids(events, _stored_events(inlet_events, asset, events))
        records[asset.name] = [event_record(e, i, keys) for e, i in zip(events, ids)]
    trigger = {
        "reason": trigger_reason(records[feature_table.name], records[drift_report.name]),
        "feature_table_events": records[feature_table.name],
        "drift_report_events": records[drift_report.name],
    }
    log.info(
        "training run started by %s: %d feature_table event(s) %s, %d drift_report event(s) %s",
        trigger["reason"], len(trigger["feature_table_events"]),
        [(e["id"], e["batch_id"]) for e in trigger["feature_table_events"]],
        len(trigger["drift_report_events"]),
        [(e["id"], e["model_version"], e["drift_share"]) for e in trigger["drift_report_events"]],
    )
    return trigger


def lineage_ids(trigger: dict) -> dict:
    """The compact lineage for tags and the registered_model extra: event ids with batch ids / reports."""
    from datasets import DriftReportEventRef, FeatureTableEventRef

    return {
        "feature_table_events": [FeatureTableEventRef(id=e["id"], batch_id=e["batch_id"])
                                 for e in trigger["feature_table_events"]],
        "drift_report_events": [
            DriftReportEventRef(id=e["id"], report_path=e["report_path"], model_version=e["model_version"])
            for e in trigger["drift_report_events"]
        ],
    }
