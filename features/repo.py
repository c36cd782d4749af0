"""The Feast feature repo: entities, sources, feature views and the feature service.

Declared plainly in one place, like Feast's templates. Sources are folders of
parquet files (one file per batch) in the offline store, read by duckdb.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.data_format import ParquetFormat
from feast.types import Float32, String
from feast.value_type import ValueType

import settings

OFFLINE = settings.get().feast_offline_dir


def _source(name: str, created: bool = False) -> FileSource:
    return FileSource(
        name=f"{name}_source",
        path=str(OFFLINE / name),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        created_timestamp_column="created" if created else "",
    )


origin = Entity(name="origin", join_keys=["origin"], value_type=ValueType.STRING,
                description="Departure airport (EWR, JFK, LGA)")
plane = Entity(name="plane", join_keys=["tailnum"], value_type=ValueType.STRING,
               description="Aircraft tail number")
carrier = Entity(name="carrier", join_keys=["carrier"], value_type=ValueType.STRING,
                 description="Two-letter airline code")
route = Entity(name="route", join_keys=["route"], value_type=ValueType.STRING,
               description="origin-dest, for example JFK-LAX")

weather_hourly = FeatureView(
    name="weather_hourly",
    entities=[origin],
    ttl=timedelta(hours=3),
    schema=[Field(name="origin", dtype=String)]
    + [Field(name=n, dtype=Float32) for n in
       ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib")],
    source=_source("weather_hourly"),
    description="Hourly weather observed at the departure airport",
)

plane_attributes = FeatureView(
    name="plane_attributes",
    entities=[plane],
    ttl=timedelta(0),  # static attributes: no expiry
    schema=[Field(name="tailnum", dtype=String)]
    + [Field(name=n, dtype=Float32) for n in ("plane_year", "seats", "engines")],
    source=_source("plane_attributes"),
    description="Year built, seats and engines of the aircraft",
)

carrier_delay_stats = FeatureView(
    name="carrier_delay_stats",
    entities=[carrier],
    # The TTL bounds how far back the point-in-time join looks for the latest row: rows are
    # hourly, so a day is plenty, and a 7-day TTL made the join five times slower.
    ttl=timedelta(days=1),
    schema=[Field(name="carrier", dtype=String)]
    + [Field(name=n, dtype=Float32) for n in ("carrier_late_rate_7d", "carrier_flights_7d")],
    source=_source("carrier_delay_stats", created=True),
    description="Share of the carrier's flights late over the trailing 7 days (outcomes known by then)",
)

route_delay_stats = FeatureView(
    name="route_delay_stats",
    entities=[route],
    ttl=timedelta(days=2),  # quiet routes publish less often than carriers
    schema=[Field(name="route", dtype=String)]
    + [Field(name=n, dtype=Float32) for n in
       ("route_late_rate_28d", "route_mean_arr_delay_28d", "route_flights_28d")],
    source=_source("route_delay_stats", created=True),
    description="Late share and mean arrival delay on the route over the trailing 28 days",
)

FEATURE_VIEWS = [weather_hourly, plane_attributes, carrier_delay_stats, route_delay_stats]

flight_delay_v1 = FeatureService(
    name="flight_delay_v1",
    features=FEATURE_VIEWS,
    description="Everything the delay model reads from Feast",
)

OBJECTS = [origin, plane, carrier, route, *FEATURE_VIEWS, flight_delay_v1]
FEATURE_SERVICE = flight_delay_v1.name
