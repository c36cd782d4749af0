"""The time split: train on older flights, choose the threshold on newer ones, test on the newest.

A random split would let the model learn from flights departing after the ones it
is judged on. Here every boundary is a point in time, so no departure time falls
in two parts, and rows are dropped where the label itself would leak: a training
flight whose outcome became known only after validation starts, or a validation
flight whose outcome became known only after the test starts, was not a known
label at that time. The test part (the newest flights) is never dropped from.
"""

from __future__ import annotations

import pandas as pd

TRAIN, VALID, TEST, DROPPED = "train", "valid", "test", "dropped"
PARTS = (TRAIN, VALID, TEST)
VALID_FRACTION = 0.15
TEST_FRACTION = 0.15


def time_split(
    flights: pd.DataFrame, valid_fraction: float = VALID_FRACTION, test_fraction: float = TEST_FRACTION
) -> pd.Series:
    """The part of each row (train, valid, test or dropped), by scheduled departure.

    The fractions are of rows; the boundaries are the departure times at those
    positions, so rows sharing a departure time stay together.
    """
    departure, known = flights["event_timestamp"], flights["outcome_at"]
    ordered = departure.sort_values(kind="stable").reset_index(drop=True)
    n = len(ordered)
    valid_start = ordered.iloc[int(n * (1 - valid_fraction - test_fraction))]
    test_start = ordered.iloc[int(n * (1 - test_fraction))]
    part = pd.Series(TRAIN, index=flights.index, dtype="object")
    part[departure >= valid_start] = VALID
    part[departure >= test_start] = TEST
    part[(part == TRAIN) & (known >= valid_start)] = DROPPED
    part[(part == VALID) & (known >= test_start)] = DROPPED
    missing = [p for p in PARTS if not (part == p).any()]
    if missing:
        raise ValueError(f"the time split left {missing} empty: {n} rows, {ordered.iloc[0]} to {ordered.iloc[-1]}")
    return part


def ranges(flights: pd.DataFrame, part: pd.Series) -> dict[str, str]:
    """First and last departure of each part, as ISO timestamps: train_start, train_end, ..."""
    out = {}
    for name in PARTS:
        times = flights.loc[part == name, "event_timestamp"]
        out[f"{name}_start"], out[f"{name}_end"] = times.min().isoformat(), times.max().isoformat()
    return out
