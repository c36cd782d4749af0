"""The Feast feature repo: entities, sources, feature views and the feature service.

Declared plainly in one place, like Feast's templates, and with no settings read
at import. Sources are folders of parquet files (one file per batch) in the
offline store, read by duckdb; their paths are relative (the table name), and
Feast resolves them against `RepoConfig.repo_path`, which `features.store`
sets to the offline directory. The names come from `features.names`.

The live feeds (`features.feeds`) reach weather, origin congestion and the
carrier and route delay rates (computed from the outcomes feed) through push
sources; each push source is backed by the view's batch source, so the
dataops batches and the pushed rows land in the same offline table and training
keeps the whole history.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.data_format import ParquetFormat
from feast.types import Float32, String
from feast.value_type import ValueType

from features import names


def _source(table: str, created: bool = False) -> FileSource:
    return FileSource(
        name=f"{table}_source",
        path=table,
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        created_timestamp_column="created" if created else "",
    )


def _schema(join_key: str, features: list[str]) -> list[Field]:
    return [Field(name=join_key, dtype=String)] + [Field(name=n, dtype=Float32) for n in features]


origin = Entity(name="origin", join_keys=[names.ORIGIN], value_type=ValueType.STRING,
                description="Departure airport (EWR, JFK, LGA)")
plane = Entity(name="plane", join_keys=[names.TAILNUM], value_type=ValueType.STRING,
               description="Aircraft tail number")
carrier = Entity(name="carrier", join_keys=[names.CARRIER], value_type=ValueType.STRING,
                 description="Two-letter airline code")
route = Entity(name="route", join_keys=[names.ROUTE], value_type=ValueType.STRING,
               description="origin-dest, for example JFK-LAX")

weather_push = PushSource(name=names.WEATHER_PUSH, batch_source=_source(names.WEATHER_VIEW),
                          description="Each hourly observation, pushed when it is observed (H:51)")

weather_hourly = FeatureView(
    name=names.WEATHER_VIEW,
    entities=[origin],
    ttl=timedelta(hours=3),
    schema=_schema(names.ORIGIN, names.WEATHER_FEATURES),
    source=weather_push,
    description="Hourly weather observed at the departure airport",
)

plane_attributes = FeatureView(
    name=names.PLANE_VIEW,
    entities=[plane],
    ttl=timedelta(0),  # static attributes: no expiry
    schema=_schema(names.TAILNUM, names.PLANE_FEATURES),
    source=_source(names.PLANE_VIEW),
    description="Year built, seats and engines of the aircraft",
)

carrier_push = PushSource(name=names.CARRIER_PUSH, batch_source=_source(names.CARRIER_VIEW, created=True),
                          description="Carrier delay rates, pushed each hour from the outcomes known by then")
carrier_delay_stats = FeatureView(
    name=names.CARRIER_VIEW,
    entities=[carrier],
    # The TTL bounds how far back the point-in-time join looks for the latest row: rows are
    # hourly, so a day is plenty, and a 7-day TTL made the join five times slower.
    ttl=timedelta(days=1),
    schema=_schema(names.CARRIER, names.CARRIER_FEATURES),
    source=carrier_push,
    description="Share of the carrier's flights late over the trailing 7 days (outcomes known by then)",
)

route_push = PushSource(name=names.ROUTE_PUSH, batch_source=_source(names.ROUTE_VIEW, created=True),
                        description="Route delay rates, pushed each hour from the outcomes known by then")
route_delay_stats = FeatureView(
    name=names.ROUTE_VIEW,
    entities=[route],
    ttl=timedelta(days=2),  # quiet routes publish less often than carriers
    schema=_schema(names.ROUTE, names.ROUTE_FEATURES),
    source=route_push,
    description="Late share and mean arrival delay on the route over the trailing 28 days",
)

congestion_push = PushSource(name=names.CONGESTION_PUSH, batch_source=_source(names.CONGESTION_VIEW, created=True),
                             description="Origin congestion rows, pushed as the grid advances")

origin_congestion = FeatureView(
    name=names.CONGESTION_VIEW,
    entities=[origin],
    # Rows every CONGESTION_GRID (5 min): a lookup finds one at most a step old; two steps of TTL.
    ttl=timedelta(minutes=10),
    schema=_schema(names.ORIGIN, names.CONGESTION_FEATURES),
    source=congestion_push,
    description="Departures from the origin in the last 2 hours (count, mean departure delay) and "
                "departures scheduled within 30 minutes either side",
)

FEATURE_VIEWS = [weather_hourly, plane_attributes, carrier_delay_stats, route_delay_stats, origin_congestion]

flight_delay_service = FeatureService(
    name=names.FEATURE_SERVICE,
    features=FEATURE_VIEWS,
    description="Everything the delay model reads from Feast",
)

OBJECTS = [origin, plane, carrier, route, *FEATURE_VIEWS, flight_delay_service]
