"""The `feature_table` extra: what the dataops DAG's producing task emits matches `datasets.FeatureTableExtra`.

`dag.test()` of the dataops DAG is not practical (continuous schedule, deferrable
sensor), so the test runs the stage function the producing task `materialize_online`
calls, `features.tasks.publish`, on a real ingested month with a bad file and a bad row.
"""

from __future__ import annotations

import json
import shutil
import typing
from pathlib import Path

import pytest

import datasets
import storage
from features import ingest, samples, tasks

REPO = Path(__file__).resolve().parents[2]


def valid_extra() -> dict:
    batch = {
        "batch_id": "b1", "content_hash": "abc",
        "files": [{"name": "flights_2013-02.parquet", "kind": "flights", "sha256": "f" * 64, "status": "accepted",
                   "rows_in": 3, "rows_accepted": 2, "rows_quarantined": 1, "move_to": "file:///p/b1__f",
                   "staged": "file:///s/b1/f.parquet"}],
        "rows_in": 3, "rows_accepted": 2, "rows_quarantined": 1,
        "event_time_min": "2013-02-01T05:00:00+00:00", "event_time_max": "2013-02-28T23:00:00+00:00",
    }
    return dict(datasets.feature_table_extra(batch))


def test_the_producing_task_emits_what_publish_returns():
    source = (REPO / "dags" / "dataops.py").read_text()
    assert "from features.tasks import publish" in source
    assert "outlet_events[feature_table].extra = publish(batch, written)" in source


def test_a_real_batch_extra_matches_its_type(home, samples_dir):
    shutil.copytree(samples_dir, home.home / "samples", dirs_exist_ok=True)
    store = storage.get()
    urls = samples.drop("2013-02")  # its weather has one out-of-range row
    good = samples.sample_path("flights", "2013-02").read_bytes()
    bad = store.url("landing", "flights_truncated.parquet")
    store.write_bytes(bad, good[: len(good) // 3])
    batch = ingest.Batch("extra-b1").ingest([*urls, bad])
    written = tasks.write_features(batch)

    extra = tasks.publish(batch, written)

    assert datasets.check_extra(datasets.feature_table, extra) is extra
    assert set(extra) == set(typing.get_type_hints(datasets.FeatureTableExtra))
    record_keys = set(typing.get_type_hints(datasets.LandingFileRecord))
    assert all(set(f) == record_keys for f in extra["files"])
    status = {f["name"]: (f["status"], f["kind"]) for f in extra["files"]}
    assert status == {"flights_2013-02.parquet": ("accepted", "flights"),
                      "weather_2013-02.parquet": ("accepted", "weather"),
                      "flights_truncated.parquet": ("quarantined", None)}
    assert extra["rows_quarantined"] == 1 and extra["rows_in"] == extra["rows_accepted"] + 1
    assert json.loads(json.dumps(extra)) == extra  # an event extra travels as JSON


def test_the_built_extra_of_a_summary_matches_its_type():
    extra = valid_extra()
    assert datasets.check_extra(datasets.feature_table, extra) is extra
    assert "staged" not in extra["files"][0]  # the summary's other keys stay out of the extra


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda e: e.pop("content_hash"), "lacks 'content_hash'"),
        (lambda e: e.update(rows_in="3"), "rows_in is str"),
        (lambda e: e.update(rows_accepted=True), "rows_accepted is bool"),
        (lambda e: e.update(event_time_min=20130201), "event_time_min is int"),
        (lambda e: e.update(files={}), "files is dict, not a list"),
        (lambda e: e["files"][0].pop("move_to"), "files[0] lacks 'move_to'"),
        (lambda e: e["files"][0].update(rows_in=None), "files[0].rows_in is NoneType"),
        (lambda e: e.update(lineage="x"), "undeclared key 'lineage'"),
    ],
)
def test_a_wrong_extra_is_refused(change, problem):
    extra = valid_extra()
    change(extra)
    with pytest.raises(datasets.ExtraMismatch, match=problem.replace("[", r"\[").replace("]", r"\]")):
        datasets.check_extra(datasets.feature_table, extra)


def test_publish_refuses_a_wrong_extra_before_touching_the_online_store(monkeypatch):
    materialized = []
    monkeypatch.setattr(tasks, "materialize_written", materialized.append)
    batch = {**valid_extra(), "rows_in": "3"}  # a summary whose count is not an int
    with pytest.raises(datasets.ExtraMismatch, match="rows_in is str"):
        tasks.publish(batch, {"weather_hourly": ["2013-02-01T05:00:00+00:00", "2013-02-01T06:00:00+00:00"]})
    assert materialized == []
