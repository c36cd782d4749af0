"""Training and serving see the same features as of the same time.

The parity test puts the online store in the state it was in at a time T (everything
known by T materialized, as the feeds and dataops would have left it), then builds the
model frame of real flights both ways, as of T:
- serving: the online read with the as-of rule (`serving.online`), `serving.frame.model_input`;
- training: `training.dataset.with_features` (Feast's `get_historical_features`), `model_frame`.
They must agree on every cell. Removing the TTL check from serving's rule makes the two
disagree (stale carrier and route statistics of quiet carriers and routes).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from features.compute import model_frame
from features.names import MODEL_FEATURES

pytestmark = pytest.mark.integration

# Four snapshot times, off any hour or grid, spread over the session's Jan-Mar store.
SNAPSHOTS = [datetime(2013, 1, 17, 15, 7, tzinfo=timezone.utc), datetime(2013, 2, 3, 4, 41, tzinfo=timezone.utc),
             datetime(2013, 2, 24, 20, 13, tzinfo=timezone.utc), datetime(2013, 3, 19, 9, 58, tzinfo=timezone.utc)]
FLIGHTS_PER_SNAPSHOT = 300


def store_as_of(when: datetime, folder) -> object:
    """A Feast store (own registry and online store) holding what the offline store knew at `when`."""
    from feast import FeatureStore

    import settings
    from features import repo
    from features.store import repo_config, with_offline_paths

    cfg = dataclasses.replace(settings.get(), feast_registry=str(folder / "registry.db"),
                              feast_online_store=str(folder / "online.db"))
    store = FeatureStore(config=repo_config(cfg))
    store.apply(with_offline_paths(repo.OBJECTS, store.config.repo_path))
    store.materialize(start_date=datetime(1970, 1, 1, tzinfo=timezone.utc), end_date=when)
    return store


def flights_after(when: datetime, n: int, seed: int) -> pd.DataFrame:
    """`n` real flights departing in the 12 hours after `when`, as of `when`."""
    from training.dataset import AS_OF, labelled_flights_between

    flights = labelled_flights_between(when, when + timedelta(hours=12))
    flights = flights.sample(min(n, len(flights)), random_state=seed)
    flights[AS_OF] = pd.Timestamp(when)
    return flights.reset_index(drop=True)


def served_frame(store, flights: pd.DataFrame, when: datetime, check_ttl: bool = True):
    from serving.client import flight_table_body
    from serving.frame import model_input
    from serving.online import OnlineFeatures
    from serving.schemas import FlightRequest

    online = OnlineFeatures(store)
    online.refresh()
    if not check_ttl:
        online._plan = tuple(dataclasses.replace(v, ttl=None) for v in online._plan)
    requests = [FlightRequest.model_validate(flight_table_body(row, as_of=when)) for _, row in flights.iterrows()]
    found = online.read([r.entity_row() for r in requests], [r.as_of for r in requests])
    return model_input(requests, found.values), found


@pytest.fixture(scope="module")
def snapshots(feature_data, tmp_path_factory):
    from training.dataset import with_features

    out = []
    for i, when in enumerate(SNAPSHOTS):
        store = store_as_of(when, tmp_path_factory.mktemp(f"as-of-{i}"))
        flights = flights_after(when, FLIGHTS_PER_SNAPSHOT, seed=i)
        trained = model_frame(with_features(flights).set_index("flight_id").loc[flights["flight_id"]].reset_index())
        out.append((when, store, flights, trained))
    return out


def mismatches(served: pd.DataFrame, trained: pd.DataFrame) -> pd.DataFrame:
    a, b = served[MODEL_FEATURES].to_numpy(), trained[MODEL_FEATURES].to_numpy()
    differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    rows, cols = np.nonzero(differ)
    return pd.DataFrame({"row": rows, "feature": [MODEL_FEATURES[c] for c in cols],
                         "served": a[rows, cols], "trained": b[rows, cols]})


def test_serving_and_training_build_the_same_frame_as_of_the_same_time(snapshots):
    flights = sum(len(f) for _, _, f, _ in snapshots)
    assert flights >= 1000
    for when, store, flights, trained in snapshots:
        served, found = served_frame(store, flights, when)
        bad = mismatches(served, trained)
        assert bad.empty, f"as of {when}: {len(bad)} cells differ:\n{bad.head(20)}"
        assert trained[MODEL_FEATURES].notna().to_numpy().mean() > 0.8  # mostly real values, not NaN == NaN
    stale = [view for when, store, flights, _trained in snapshots
             for row in served_frame(store, flights, when)[1].stale for view in row]
    assert stale, "no stale value in any snapshot: the TTL rule is not exercised"


def test_without_the_ttl_rule_serving_would_use_values_training_never_saw(snapshots):
    differing = 0
    for when, store, flights, trained in snapshots:
        served, _ = served_frame(store, flights, when, check_ttl=False)
        differing += len(mismatches(served, trained))
    assert differing > 0


def test_a_value_newer_than_the_as_of_time_is_not_served(snapshots):
    """The online store holds the newest values; asked about an earlier time, it must not answer with them."""
    when, store, flights, _ = snapshots[1]
    earlier = when - timedelta(hours=2)
    served, found = served_frame(store, flights, earlier)
    for i, stamps in enumerate(found.stamps):
        for view, stamp in stamps.items():
            if stamp is not None and stamp > earlier:
                assert view in found.stale[i]
    assert any("weather_hourly" in s for s in found.stale)  # the last two hours of weather are in the store
    assert served["temp"].isna().all()
