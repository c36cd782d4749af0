"""The model input of prediction requests, built without per-row pandas work.

`features.compute.model_frame(request_features(...))` on a one-row DataFrame costs
about 6 ms here, more than a request's whole latency budget, so the server fills a
float64 matrix in `MODEL_FEATURES` order and wraps it in one DataFrame (0.1 ms).
The result must equal what `model_frame` gives for the same flight, so training and
serving never disagree: tests/serving/test_inputs.py checks it on every test flight,
daylight-saving changes included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from features.compute import LOCAL_TZ, MODEL_FEATURES

_LOCAL = ZoneInfo(LOCAL_TZ)
_COLUMN = {name: i for i, name in enumerate(MODEL_FEATURES)}


def local_departure(sched_dep_ts: datetime) -> tuple[float, float]:
    """Local (New York) departure hour and weekday (Monday = 0), as `request_features` computes them."""
    local = sched_dep_ts.astimezone(_LOCAL)
    return float(local.hour), float(local.weekday())


def flight_id(carrier: str, flight: int, origin: str, sched_dep_ts: datetime) -> str:
    """The id the labelled flight table gives the same flight, so predictions join to outcomes."""
    utc = sched_dep_ts.astimezone(timezone.utc)
    return f"{carrier}{int(flight)}-{origin}-{utc:%Y%m%d%H%M}"


def model_input(requests: Sequence, online_values: Sequence[Mapping[str, float | None]]) -> pd.DataFrame:
    """One row per request: its request features plus its online feature values, NaN where missing.

    `requests` have `sched_dep_ts` (timezone-aware) and `distance`; `online_values`
    map feature names to numbers or None.
    """
    matrix = np.full((len(requests), len(MODEL_FEATURES)), np.nan)
    distance, hour, dow = _COLUMN["distance"], _COLUMN["dep_hour"], _COLUMN["dep_dow"]
    for row, request, values in zip(matrix, requests, online_values):
        for name, value in values.items():
            column = _COLUMN.get(name)
            if column is not None and value is not None:
                row[column] = value
        row[distance] = request.distance
        row[hour], row[dow] = local_departure(request.sched_dep_ts)
    return pd.DataFrame(matrix, columns=MODEL_FEATURES)
