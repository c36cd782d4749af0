"""Reading every triggering event: all of them, oldest first, with their database ids."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult, AssetEventResult
from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

from datasets import drift_report, feature_table
from training import events

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def _ref(asset, minutes: int, extra: dict, run_id: str) -> AssetEventDagRunReferenceResult:
    """An event as Airflow 3.3 hands it to a consumer task (no id)."""
    return AssetEventDagRunReferenceResult(
        asset={"name": asset.name, "uri": asset.uri, "extra": {}}, extra=extra, source_task_id="emit",
        source_dag_id="producer", source_run_id=run_id, source_map_index=-1, source_aliases=[],
        timestamp=T0 + timedelta(minutes=minutes),
    )


def _stored(event_id: int, ref: AssetEventDagRunReferenceResult) -> AssetEventResult:
    """The same event as the inlet accessor returns it (with its id)."""
    return AssetEventResult(
        id=event_id, timestamp=ref.timestamp, extra=ref.extra, created_dagruns=[],
        asset={"name": ref.asset.name, "uri": ref.asset.uri, "group": "g"},
        source_task_id=ref.source_task_id, source_dag_id=ref.source_dag_id, source_run_id=ref.source_run_id,
        source_map_index=ref.source_map_index,
    )


class FakeInletEvents:
    """Stands in for `inlet_events`: per asset the stored events, filtered by after/before like the API."""

    def __init__(self, stored: dict):
        self.stored, self.queries = stored, []

    def __getitem__(self, asset):
        outer = self

        class Accessor:
            def after(self, ts):
                self.lo = ts
                return self

            def before(self, ts):
                outer.queries.append((asset.name, self.lo, ts))
                lo, hi = datetime.fromisoformat(self.lo), datetime.fromisoformat(ts)
                return [e for e in outer.stored[asset.name] if lo <= e.timestamp <= hi]

        return Accessor()


@pytest.fixture
def batches():
    return [_ref(feature_table, i, {"batch_id": f"b{i}", "rows_accepted": 100 + i}, f"dataops_{i}") for i in range(3)]


def test_several_feature_table_events_are_all_read_oldest_first_with_their_ids(batches):
    triggering = TriggeringAssetEventsAccessor.build([batches[2], batches[0], batches[1]])  # as the DB returned them
    other = _ref(feature_table, 30, {"batch_id": "later"}, "dataops_later")  # outside the span
    inlets = FakeInletEvents({feature_table.name: [_stored(10 + i, b) for i, b in enumerate(batches)]
                              + [_stored(99, other)]})

    trigger = events.read_trigger(triggering, inlets)

    assert trigger["reason"] == events.FRESH_DATA
    assert [(e["id"], e["batch_id"]) for e in trigger["feature_table_events"]] == [(10, "b0"), (11, "b1"), (12, "b2")]
    assert trigger["feature_table_events"][2]["rows_accepted"] == 102
    assert trigger["drift_report_events"] == []
    # Only the span of the triggering events was asked for.
    (query,) = inlets.queries
    assert [datetime.fromisoformat(t) for t in query[1:]] == [batches[0].timestamp, batches[-1].timestamp]


def test_a_drift_report_makes_it_a_drift_run_and_its_extra_is_kept(batches):
    report = _ref(drift_report, 5, {"report_path": "s3://r/1.html", "drift_share": 0.6, "model_version": "3",
                                    "drifted_columns": ["temp", "dewp"]}, "monitoring_1")
    triggering = TriggeringAssetEventsAccessor.build([batches[0], report])
    inlets = FakeInletEvents({feature_table.name: [_stored(7, batches[0])], drift_report.name: [_stored(8, report)]})

    trigger = events.read_trigger(triggering, inlets)

    assert trigger["reason"] == events.DRIFT
    (drift,) = trigger["drift_report_events"]
    assert (drift["id"], drift["model_version"], drift["drift_share"]) == (8, "3", 0.6)
    assert drift["drifted_columns"] == ["temp", "dewp"]
    assert events.lineage_ids(trigger) == {
        "feature_table_events": [{"id": 7, "batch_id": "b0"}],
        "drift_report_events": [{"id": 8, "report_path": "s3://r/1.html", "model_version": "3"}],
    }


def test_no_events_is_a_manual_run():
    trigger = events.read_trigger(TriggeringAssetEventsAccessor.build([]), FakeInletEvents({}))
    assert trigger == {"reason": events.MANUAL, "feature_table_events": [], "drift_report_events": []}


def test_events_that_carry_an_id_need_no_lookup_and_unmatched_ones_keep_a_none_id(batches):
    with_id = [type("E", (), {"id": 41, "timestamp": T0, "extra": {"batch_id": "x"}})()]
    assert events.event_ids(with_id, stored=[]) == [41]
    assert events.event_ids(batches[:1], stored=[]) == [None]


def test_the_id_comes_from_the_stored_event_of_the_same_source_not_just_the_same_time(batches):
    twin = _ref(feature_table, 0, {"batch_id": "twin"}, "another_run")  # same timestamp as batches[0]
    ids = events.event_ids([batches[0]], stored=[_stored(1, twin), _stored(2, batches[0])])
    assert ids == [2]


def test_the_reason_picks_the_training_window(monkeypatch):
    import settings
    from training import dataset

    monkeypatch.setenv("MLOPS_TRAINING_WINDOW_WEEKS", "0")
    monkeypatch.setenv("MLOPS_DRIFT_TRAINING_WINDOW_WEEKS", "6")
    cfg = settings.load()
    assert dataset.window_weeks(events.DRIFT, cfg) == 6
    assert dataset.window_weeks(events.FRESH_DATA, cfg) == 0 and dataset.window_weeks(events.MANUAL, cfg) == 0
