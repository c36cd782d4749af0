"""The time split: train on older flights, choose the threshold on newer ones, test on the newest.

A random split would let the model learn from flights departing after the ones it
is judged on. Here every boundary is a point in time, so no departure time falls
in two parts, and rows are dropped where the label itself would leak: a training
flight whose outcome became known only after validation starts, or a validation
flight whose outcome became known only after the test starts, was not a known
label at that time. The test part (the newest flights) is never dropped from.

A drift-triggered run is judged on the drifted period (`new_since`: the champion's
`data_as_of`): with at least `MIN_NEW_ROWS` flights after it, the boundaries fall
inside that period: the older history and the first `NEW_TRAIN_FRACTION` of the new
flights train, the next `NEW_VALID_FRACTION` validate, the newest test. So the
challenger learns from the new period and both models are compared on it (a
challenger trained on two July days alone lost to the winter champion on the third;
one trained on all history never saw July, which was all test).
"""

from __future__ import annotations

import pandas as pd

TRAIN, VALID, TEST, DROPPED = "train", "valid", "test", "dropped"
PARTS = (TRAIN, VALID, TEST)
VALID_FRACTION = 0.15
TEST_FRACTION = 0.15
MIN_NEW_ROWS = 300
NEW_TRAIN_FRACTION = 0.5
NEW_VALID_FRACTION = 0.2


def time_split(
    flights: pd.DataFrame, valid_fraction: float = VALID_FRACTION, test_fraction: float = TEST_FRACTION,
    new_since: pd.Timestamp | None = None,
) -> pd.Series:
    """The part of each row (train, valid, test or dropped), by scheduled departure.

    The fractions are of rows; the boundaries are the departure times at those
    positions, so rows sharing a departure time stay together. With `new_since` and
    enough flights after it, the boundaries are placed inside that new period.
    """
    departure, known = flights["event_timestamp"], flights["outcome_at"]
    ordered = departure.sort_values(kind="stable").reset_index(drop=True)
    n = len(ordered)
    new = ordered[ordered > new_since].reset_index(drop=True) if new_since is not None else ordered.iloc[:0]
    if len(new) >= MIN_NEW_ROWS:
        valid_start = new.iloc[int(len(new) * NEW_TRAIN_FRACTION)]
        test_start = new.iloc[int(len(new) * (NEW_TRAIN_FRACTION + NEW_VALID_FRACTION))]
    else:
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
