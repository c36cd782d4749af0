"""The server's fast input path gives exactly what training's functions give."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from features.compute import MODEL_FEATURES, REQUEST_FEATURES, model_frame, request_features
from serving.frame import flight_id, model_input
from serving.online import OnlineFeatures

STORED = [c for c in MODEL_FEATURES if c not in REQUEST_FEATURES]


@pytest.fixture(scope="module")
def flights(feature_data) -> pd.DataFrame:
    from features.store import FLIGHTS_TABLE, read_offline_table

    return read_offline_table(FLIGHTS_TABLE)


def test_model_input_equals_model_frame_on_every_flight(flights):
    """Local hour and weekday across both DST changes of the data, NaN handling and column order."""
    rng = np.random.default_rng(0)
    stored = rng.normal(size=(len(flights), len(STORED)))
    stored[rng.random(stored.shape) < 0.2] = np.nan
    online = [{k: (None if np.isnan(v) else float(v)) for k, v in zip(STORED, row)} for row in stored]
    requests = [SimpleNamespace(sched_dep_ts=ts.to_pydatetime(), distance=d)
                for ts, d in zip(flights["event_timestamp"], flights["distance"])]

    expected = model_frame(pd.concat([
        request_features(flights["event_timestamp"], flights["distance"]).reset_index(drop=True),
        pd.DataFrame(stored, columns=STORED),
    ], axis=1))
    pd.testing.assert_frame_equal(model_input(requests, online), expected, check_exact=True)


def test_flight_id_is_the_flight_tables_id(flights):
    ids = [flight_id(r.carrier, r.flight, r.origin, r.event_timestamp.to_pydatetime())
           for r in flights.itertuples()]
    assert ids == flights["flight_id"].tolist()


def test_online_lookup_equals_feast_get_online_features(flights):
    from features.names import FEATURE_SERVICE
    from features.store import feature_store

    sample = flights.sample(40, random_state=1)
    rows = [{"origin": r.origin, "tailnum": None if pd.isna(r.tailnum) else r.tailnum, "carrier": r.carrier,
             "route": r.route} for r in sample.itertuples()]
    rows.append({**rows[0], "tailnum": None})
    rows.append({"origin": "ZZZ", "tailnum": "N00000", "carrier": "Q9", "route": "ZZZ-YYY"})
    online = OnlineFeatures()
    online.refresh()

    values, unknown = online.lookup(rows)

    store = feature_store()
    feast_rows = [{k: v or "" for k, v in row.items()} for row in rows]
    reference = store.get_online_features(features=store.get_feature_service(FEATURE_SERVICE),
                                          entity_rows=feast_rows).to_dict()
    for i, row_values in enumerate(values):
        for name in STORED:
            assert row_values.get(name) == reference[name][i], (i, name)
    # Two views are keyed by origin now (weather, origin congestion): OnlineFeatures.lookup names a join
    # key once per view, so "origin" appears twice until serving de-duplicates it.
    assert list(dict.fromkeys(unknown[-1])) == ["origin", "tailnum", "carrier", "route"]
    assert unknown[-2] == ["tailnum"]
    assert all("origin" not in u and "carrier" not in u and "route" not in u for u in unknown[:-1])
    for i, u in enumerate(unknown):
        if "tailnum" in u:
            assert all(reference[name][i] is None for name in ("plane_year", "seats", "engines"))


def test_lookup_before_the_registry_knows_the_service_says_so(home):
    from serving.online import FeaturesNotReady

    online = OnlineFeatures()
    with pytest.raises(FeaturesNotReady, match="not in the Feast registry"):
        online.refresh()
    with pytest.raises(FeaturesNotReady, match="not in the Feast registry"):
        online.lookup([{"origin": "EWR"}])
