"""Every feature name of the contract between the stages, declared once.

Standard library only: the Feast repo (`features.repo`), feature computation
(`features.compute`), training, serving and monitoring all read their names from
here, so none of them has to import pandas or Feast to agree on a column.
"""

from __future__ import annotations

# -- entities: the join keys of the feature views --------------------------------------------
ORIGIN = "origin"  # departure airport (EWR, JFK, LGA)
TAILNUM = "tailnum"  # aircraft tail number
CARRIER = "carrier"  # two-letter airline code
ROUTE = "route"  # "{origin}-{dest}", for example JFK-LAX

# The airports the origin-keyed views know: a feed row for any other origin is rejected.
ORIGINS = ("EWR", "JFK", "LGA")

# -- feature views and their features ---------------------------------------------------------
WEATHER_VIEW = "weather_hourly"  # by ORIGIN
PLANE_VIEW = "plane_attributes"  # by TAILNUM
CARRIER_VIEW = "carrier_delay_stats"  # by CARRIER
ROUTE_VIEW = "route_delay_stats"  # by ROUTE
CONGESTION_VIEW = "origin_congestion"  # by ORIGIN, on a regular time grid
VIEW_NAMES = (WEATHER_VIEW, PLANE_VIEW, CARRIER_VIEW, ROUTE_VIEW, CONGESTION_VIEW)

# Push sources of the live feeds (features.feeds); each is backed by its view's batch source.
WEATHER_PUSH = "weather_hourly_push"
CONGESTION_PUSH = "origin_congestion_push"
CARRIER_PUSH = "carrier_delay_stats_push"
ROUTE_PUSH = "route_delay_stats_push"

WEATHER_FEATURES = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]
PLANE_FEATURES = ["plane_year", "seats", "engines"]
CARRIER_FEATURES = ["carrier_late_rate_7d", "carrier_flights_7d"]
ROUTE_FEATURES = ["route_late_rate_28d", "route_mean_arr_delay_28d", "route_flights_28d"]
# At time t: departures that left the origin in (t - 2 h, t], their mean departure delay, and the
# departures scheduled from it within t +- 30 min (schedules are published in advance).
CONGESTION_FEATURES = ["origin_departures_2h", "origin_mean_dep_delay_2h", "origin_scheduled_1h"]
# Computed from the request itself, identically in training and serving (not in Feast).
REQUEST_FEATURES = ["distance", "dep_hour", "dep_dow"]

# The model's input columns, in order. Training and serving both build them with
# `features.compute.model_frame`, so the two never disagree. New views go at the end, so the
# columns before them keep their order.
MODEL_FEATURES = (REQUEST_FEATURES + WEATHER_FEATURES + PLANE_FEATURES + CARRIER_FEATURES + ROUTE_FEATURES
                  + CONGESTION_FEATURES)

LABEL = "is_late"  # arrival delay > 15 min; cancelled and diverted flights count as late

# The Feast feature service over the five views: what training and serving read.
FEATURE_SERVICE = "flight_delay_v1"
