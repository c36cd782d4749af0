"""The training set: labelled flights joined point in time to the feature service.

Entity rows are the flights of the offline flight table. "Now" for a run is the
newest scheduled departure in that table (`as_of`); a flight is only used when
its label was known by then (`outcome_at <= as_of`), so the newest hours lose the
flights still in the air. Cancelled and diverted flights count as late, as the
feature contract says. Features come from Feast `get_historical_features` over
the feature service, which only joins values stamped at or before each
departure, so no feature sees the future.

Size: the window is all history or the last N weeks before `as_of`; above
`training_max_rows` the newest half of the cap is kept whole (it holds the
validation and test parts and the most recent behaviour) and the older flights
are sampled down (seeded) to fill the other half.
"""

from __future__ import annotations

import logging

import pandas as pd

import settings
from features.names import CARRIER, LABEL, MODEL_FEATURES, ORIGIN, REQUEST_FEATURES, ROUTE, TAILNUM
from training import events

log = logging.getLogger(__name__)

SEED = 0
ENTITY_KEYS = [CARRIER, TAILNUM, ORIGIN, ROUTE]
# From the flight table itself: ids, times, the label and the request features.
FLIGHT_COLUMNS = ["flight_id", "event_timestamp", "outcome_at", LABEL, *REQUEST_FEATURES]
AS_OF = "as_of"  # when the prediction is asked: the entity timestamp of the point-in-time join
COLUMNS = ["flight_id", "event_timestamp", AS_OF, "outcome_at", LABEL, *MODEL_FEATURES]


class NoTrainingData(RuntimeError):
    """The window holds no usable labelled flights."""


def window_weeks(reason: str, cfg: settings.Settings | None = None) -> int:
    """Weeks of history to train on (0 = all): drift asks for recent data only."""
    cfg = cfg or settings.get()
    return cfg.drift_training_window_weeks if reason == events.DRIFT else cfg.training_window_weeks


def cap_rows(flights: pd.DataFrame, max_rows: int, seed: int = SEED) -> pd.DataFrame:
    """At most `max_rows`: the newest `max_rows // 2` whole, a seeded sample of the older ones."""
    if max_rows <= 0 or len(flights) <= max_rows:
        return flights
    ordered = flights.sort_values(["event_timestamp", "flight_id"], kind="stable")
    keep_whole = max_rows // 2
    newest, older = ordered.iloc[-keep_whole:], ordered.iloc[:-keep_whole]
    sampled = older.sample(n=max_rows - keep_whole, random_state=seed)
    return pd.concat([sampled, newest]).sort_values(["event_timestamp", "flight_id"], kind="stable")


def labelled_flights(
    weeks: int, max_rows: int, as_of: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, pd.Timestamp]:
    """The entity rows of one training set and the `as_of` time they were chosen at.

    `as_of` defaults to the newest departure in the table; an earlier one gives the
    training set the store would have given then (backfills, tests).
    """
    from features.store import FLIGHTS_TABLE, read_offline_table

    flights = read_offline_table(FLIGHTS_TABLE)
    if flights.empty:
        raise NoTrainingData("the offline flight table is empty: no batch has been ingested")
    # A flight re-delivered in a later batch counts once, with its latest values
    # (part files are read in name order, and batch ids start with the batch time).
    flights = flights.drop_duplicates("flight_id", keep="last")
    newest = flights["event_timestamp"].max()
    as_of = newest if as_of is None else min(pd.Timestamp(as_of), newest)
    known = flights[(flights["event_timestamp"] <= as_of) & (flights["outcome_at"] <= as_of)]
    if weeks > 0:
        known = known[known["event_timestamp"] > as_of - pd.Timedelta(weeks=weeks)]
    chosen = cap_rows(known, max_rows)
    log.info("%d labelled flights known at %s in a %s window; %d after the cap of %d",
             len(known), as_of, f"{weeks}-week" if weeks else "all-history", len(chosen), max_rows)
    return chosen.reset_index(drop=True), as_of


def batch_ids(flights: pd.DataFrame) -> list[str]:
    """The batches whose flights are in a training set, recorded on the version (`Tag.TRAINING_BATCHES`):
    landing batches (`features.ingest`) and outcomes feed batches (`features.feeds.batch_id`) alike."""
    return sorted(flights["batch_id"].astype(str).unique().tolist())


def with_features(flights: pd.DataFrame) -> pd.DataFrame:
    """The flights joined point in time to the feature service: COLUMNS, one row per flight.

    Each flight is joined as of the time its prediction is asked: its own `as_of`
    column when it has one, else `PREDICTION_LEAD` before its scheduled departure
    (`features.compute.as_of`), which is when serving is asked about it.
    Feast is asked once per distinct (entity keys, as-of time): its duckdb join
    carries every entity column through a window over all matching feature rows,
    so a narrow entity frame is several times faster than passing the flights.
    """
    from features.compute import TS, as_of
    from features.names import FEATURE_SERVICE
    from features.store import feature_store

    on = ENTITY_KEYS + [AS_OF]
    flights = flights.copy()
    flights[AS_OF] = (flights[AS_OF] if AS_OF in flights else as_of(flights["event_timestamp"])).astype(TS)
    # No tail number: no plane features (NaN), as serving does.
    flights["tailnum"] = flights["tailnum"].astype("string").fillna("")
    for key in ENTITY_KEYS:
        flights[key] = flights[key].astype(str)
    store = feature_store()
    entities = flights[on].drop_duplicates().rename(columns={AS_OF: "event_timestamp"})
    features = store.get_historical_features(
        entity_df=entities, features=store.get_feature_service(FEATURE_SERVICE)
    ).to_df().rename(columns={"event_timestamp": AS_OF})
    for key in ENTITY_KEYS:
        features[key] = features[key].astype(str)
    features[AS_OF] = features[AS_OF].astype(TS)
    joined = flights[ENTITY_KEYS + FLIGHT_COLUMNS + [AS_OF]].merge(features, on=on, how="left",
                                                                   validate="many_to_one")
    if len(joined) != len(flights):
        raise RuntimeError(f"the feature join returned {len(joined)} rows for {len(flights)} flights")
    out = joined.sort_values(["event_timestamp", "flight_id"], kind="stable").reset_index(drop=True)
    for col in MODEL_FEATURES:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    return out[COLUMNS]


def labelled_flights_between(start: pd.Timestamp, end: pd.Timestamp, as_of: pd.Timestamp | None = None,
                             cap: int | None = None, seed: int = SEED) -> pd.DataFrame:
    """The labelled flights departing in [start, end], once each, in departure order.

    A flight delivered in two batches counts once, with its latest delivery (part
    files are read in batch order). With `as_of` only outcomes known by then count;
    above `cap` rows a seeded sample is taken.
    """
    import pyarrow.dataset as ds

    from features.compute import utc
    from features.store import FLIGHTS_TABLE, read_offline_table

    start, end = utc(start), utc(end)
    flights = read_offline_table(FLIGHTS_TABLE, filters=(ds.field("event_timestamp") >= start.to_pydatetime())
                                 & (ds.field("event_timestamp") <= end.to_pydatetime()))
    if flights.empty:
        return flights
    flights = flights.drop_duplicates("flight_id", keep="last")
    if as_of is not None:
        flights = flights[flights["outcome_at"] <= utc(as_of)]
    if cap is not None and len(flights) > cap:
        flights = flights.sample(cap, random_state=seed)
    return flights.sort_values(["event_timestamp", "flight_id"], kind="stable").reset_index(drop=True)


def holdout(start, end, as_of=None, cap: int | None = None) -> pd.DataFrame:
    """The labelled flights departing in [start, end] joined point in time to the feature service (COLUMNS).

    For a model version pass its tags `test_start`, `test_end` and `data_as_of`: this
    rebuilds from the feature store exactly the holdout it was tested on (the cap
    never samples it). Serving's validation and the gate's comparisons use it.
    """
    flights = labelled_flights_between(start, end, as_of, cap)
    if flights.empty:
        raise NoTrainingData(f"no labelled flights in the feature store between {start} and {end}")
    return with_features(flights)
