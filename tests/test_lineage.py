"""`make lineage` on real data: a version trained on a landing batch and on outcomes feed batches.

The landing batch is ingested (`features.ingest`, `features.tasks.write_features`), the outcomes
are pushed hour by hour through `features.feeds.push_outcomes` (one bad row quarantined), the
training set's batches are what training records on the version (`training.dataset.batch_ids` of
`labelled_flights`), and the Airflow events are those the producers' builders make.
"""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pandas as pd

import datasets
import storage
from features import feeds, ingest, names, tasks
from features.store import FLIGHTS_TABLE, feature_store, read_offline_table, table_dir
from test_extras import deployed_model_extra, drift_report_extra, registered_model_extra


def test_lineage_traces_a_drift_version_to_its_landing_files_and_its_outcomes_feed_part_files(home, samples_dir):
    from ops import lineage
    from training import dataset

    st = storage.get()
    store = feature_store(apply=True)
    # A landing file: the flights of two June days.
    june = pd.read_parquet(samples_dir / "flights_2013-06.parquet")
    url = st.url("landing", "flights_2013-06-01.parquet")
    st.write_parquet(url, june[(june["month"] == 6) & (june["day"] <= 2)])
    batch = ingest.Batch(ingest.batch_id_for("manual__june", datetime(2013, 6, 3, tzinfo=timezone.utc)), st) \
        .ingest([url])
    tasks.write_features(batch)
    # Three hours of July outcomes through the feed; the first push has a bad row.
    july = pd.read_parquet(samples_dir / "flights_2013-07.parquet")
    clocks = pd.date_range("2013-07-01 15:00", periods=3, freq="h", tz="UTC")
    pushed = []
    for clock in clocks:
        rows = feeds.outcome_feed_rows(july, clock - pd.Timedelta(hours=1), clock)
        if not pushed:
            rows.loc[rows.index[0], "carrier"] = "U!"
        pushed.append(feeds.push_outcomes(rows, clock=clock, store=store))
    assert pushed[0].rows_quarantined == 1 and all(r.rows_pushed for r in pushed)

    flights, _ = dataset.labelled_flights(0, 0)
    trained_on = dataset.batch_ids(flights)
    feed_ids = [b for b in trained_on if b.startswith("feed_outcomes__")]
    first_push = feeds.batch_id(feeds.OUTCOMES, clocks[0], feeds.outcome_feed_rows(
        july, clocks[0] - pd.Timedelta(hours=1), clocks[0]).pipe(
        lambda r: r.assign(carrier=["U!", *r["carrier"].iloc[1:]])))
    assert batch["batch_id"] in trained_on and first_push in feed_ids and len(trained_on) == 1 + len(feed_ids)

    stored = {  # the events, as the producers' builders make them: a drift-triggered version names no batch
        "feature_table": [{"id": 7, "timestamp": "t", "extra": datasets.feature_table_extra(batch)}],
        "drift_report": [{"id": 8, "timestamp": "t", "extra": drift_report_extra(model_version="4", drift_share=0.6)}],
        "registered_model": [{"id": 9, "timestamp": "t", "extra": registered_model_extra(
            [], [{"id": 8, "report_path": "file:///r/1.html", "model_version": "4"}],
            version="5", champion_version="4")}],
        "deployed_model": [{"id": 10, "timestamp": "t", "extra": deployed_model_extra(version="5", previous_version="4")}],
    }
    client = SimpleNamespace(asset_events=lambda name, limit=100: stored[name])
    cfg = SimpleNamespace(mlflow_tracking_uri="http://mlflow", model_name="flight_delay")

    lines = lineage.chain(client, cfg, batches_of=lambda cfg, version: trained_on, version="5")
    text = "\n".join(lines)
    print(text)

    assert "no batch recorded" not in text and "trigger drift" in text and "share 0.6 on v4" in text
    # The landing batch: its event and its file.
    assert f"batch {batch['batch_id']}, {batch['rows_accepted']} rows, 2013-06-01..2013-06-03 (in the training set)" \
        in text
    assert "landing file   flights_2013-06-01.parquet (accepted" in text
    # The feed batches: no landing file, the feed's part files and the quarantined row.
    in_part = int(read_offline_table(FLIGHTS_TABLE)["batch_id"].isin(feed_ids).sum())
    assert f"outcomes feed    {len(feed_ids)} pushes, clock 2013-07-01T15:00..{clocks[len(feed_ids) - 1]:%Y-%m-%dT%H:%M}, " \
        f"{in_part} flights delivered, batches {first_push} .. {feed_ids[-1]}" in text
    assert "no landing file: these rows were pushed by the outcomes feed" in text
    assert f"part file      {table_dir(FLIGHTS_TABLE) / 'feed_outcomes__20130701.parquet'} ({in_part} rows of these batches)" \
        in text
    for view in (names.CARRIER_VIEW, names.ROUTE_VIEW):
        assert any(line.endswith(f"/{view}/feed_outcomes__20130701.parquet") for line in lines), view
    quarantined = [line for line in lines if line.strip().startswith("quarantined")]
    assert len(quarantined) == 1 and first_push in quarantined[0]
    assert "1 row(s) by the push at 2013-07-01T15:00:00+00:00 ({'format': 1})" in quarantined[0]


def test_lineage_says_so_when_a_version_records_no_batch(monkeypatch):
    from ops import lineage

    extra = datasets.registered_model_extra(
        model_name="m", version="2", run_id="r", metrics={}, champion_version=None, champion_metrics=None,
        trigger_reason="drift", gate_rule="x", feature_table_events=[], drift_report_events=[])
    client = SimpleNamespace(asset_events=lambda name, limit=100: (
        [{"id": 1, "timestamp": "t", "extra": extra}] if name == "registered_model" else []))
    cfg = SimpleNamespace(mlflow_tracking_uri="http://mlflow", model_name="m")
    text = "\n".join(lineage.chain(client, cfg, batches_of=lambda cfg, version: [], version="2"))
    assert "(no batch recorded on this version)" in text


def test_every_deployed_version_is_listed_once_in_deployment_order():
    from ops import lineage

    events = [{"id": i, "extra": {"version": v}} for i, v in ((3, "2"), (1, "1"), (5, "3"), (4, "1"))]
    client = SimpleNamespace(asset_events=lambda name, limit=100: events if name == "deployed_model" else [])
    assert lineage.deployed_versions(client) == ["1", "2", "3"]
