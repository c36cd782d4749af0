"""Per-column drift thresholds, calibrated on the training period when a version is trained.

How far a column moves between two windows of served traffic depends on the column
and on the window's length: weather swings from one two-day window to the next
(temperature scores up to 1.7 against a Jan-Feb reference inside Jan-Feb itself),
while distance or the plane's seats hardly move (0.1). One threshold for all either
misses real change in the quiet columns or flags weather every few days.

The rule, applied to every MODEL_FEATURES column when a candidate is trained:
- cut the training part, by departure, into consecutive windows of the monitoring
  window's span (`MLOPS_MONITOR_WINDOW_DAYS` days; an incomplete last span, or a span
  with fewer than `MIN_WINDOW_ROWS` rows, is left out);
- score each window against the reference sample with the report's own score
  (normed Wasserstein: the distance divided by the reference's standard deviation);
- the column's threshold is `MARGIN` times its highest score, and at least `FLOOR`;
- a column whose threshold reaches `CAP` moves as much within the training period as
  the seasons move the weather (July temperature scores about 4 against winter), so
  at this window length it cannot tell periods apart: it is reported for information
  and left out of the verdict.

Measured on the demo's data with 2,000-row windows (two or three days of departures,
before windows were spans): temp 1.66 -> 2.49 (July scored 4.27), dewp 1.74 -> 2.61
(3.65), dep_dow 0.88 -> 1.32 (a two-day window holds two weekdays: July's 1.20 was not
drift), carrier_late_rate_7d 0.93 -> 1.40 (2.59). Seven-day windows: docs/benchmarks.md.

The calibration gap (mean predicted late rate minus the observed one) gets the same
treatment when the training part carries its labels: the late rate moves from week
to week (a blizzard week against a quiet one), so a winter model's gap on the first
March week reached +0.072 with nothing wrong but the week. Its limit is `MARGIN`
times the largest distance of a training window's late rate from the period's; the
policy judges at that or the settings' limit, whichever is wider.

The thresholds go with the reference sample (`training.tracking.REFERENCE_THRESHOLDS`);
a version without them is judged with the settings' one column threshold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.names import LABEL, MODEL_FEATURES

MARGIN = 1.5
FLOOR = 0.25
CAP = 3.0
MIN_WINDOWS = 3  # fewer windows of history: no calibration
MIN_WINDOW_ROWS = 200  # a span with fewer rows scores noise, not the period


def normed_wasserstein(reference: pd.Series, current: pd.Series) -> float | None:
    """Evidently's `wasserstein` score: the Wasserstein distance over the reference's standard deviation."""
    from scipy.stats import wasserstein_distance

    ref, cur = reference.dropna().to_numpy(float), current.dropna().to_numpy(float)
    if not len(ref) or not len(cur):
        return None
    return float(wasserstein_distance(ref, cur) / max(np.std(ref), 0.001))


def spans(history: pd.DataFrame, window_days: float) -> list[pd.DataFrame]:
    """Consecutive complete spans of `window_days` of `event_timestamp`, from the first one."""
    times = pd.to_datetime(history["event_timestamp"], utc=True)
    if times.dropna().empty:
        return []
    span = pd.Timedelta(days=window_days)
    index = ((times - times.min()) // span)
    complete = int((times.max() - times.min()) // span)  # the last span is still open
    return [w for k, w in history.groupby(index) if k < complete and len(w) >= MIN_WINDOW_ROWS]


def calibrate(history: pd.DataFrame, reference: pd.DataFrame, window_days: float,
              columns: list[str] = MODEL_FEATURES) -> dict | None:
    """The thresholds of one version: `history` is its training part (with `event_timestamp`)."""
    windows = spans(history, window_days)
    if len(windows) < MIN_WINDOWS:
        return None
    out = {}
    for column in columns:
        scores = [s for s in (normed_wasserstein(reference[column], w[column]) for w in windows) if s is not None]
        if not scores:
            out[column] = {"max_in_training": None, "threshold": None, "judged": False,
                           "why": "empty in the training windows or the reference"}
            continue
        threshold = round(max(MARGIN * max(scores), FLOOR), 4)
        judged = threshold < CAP
        out[column] = {"max_in_training": round(max(scores), 4), "threshold": threshold, "judged": judged,
                       "why": None if judged else (f"its {window_days:g}-day windows inside the training period "
                                                   f"already score up to {max(scores):.2f}: at this window length "
                                                   f"it cannot tell periods apart")}
    return {"window_days": window_days, "windows": len(windows), "margin": MARGIN, "floor": FLOOR, "cap": CAP,
            "columns": out, "calibration_gap": gap_limit(windows)}


def gap_limit(windows: list[pd.DataFrame]) -> dict | None:
    """The calibration gap's limit from how far the training windows' late rates move from the period's.

    A model's output on its own training rows fits each week (its gaps there were at
    most 0.013 on Jan-Feb), so it cannot say how far an unseen week may move; the
    late rate's own swing between weeks can.
    """
    if not windows or not all(LABEL in w for w in windows):
        return None
    rates = [float(w[LABEL].mean()) for w in windows]
    overall = float(pd.concat([w[LABEL] for w in windows]).mean())
    worst = max(abs(r - overall) for r in rates)
    return {"late_rate_swing_in_training": round(worst, 4), "limit": round(MARGIN * worst, 4)}


def thresholds(calibrated: dict | None, default: float) -> tuple[dict[str, float], dict[str, str]]:
    """({column: threshold} to judge, {column: why not judged}); without calibration, `default` for all."""
    if not calibrated:
        return {c: default for c in MODEL_FEATURES}, {}
    judged, left_out = {}, {}
    for column in MODEL_FEATURES:
        entry = calibrated["columns"].get(column)
        if entry is None:
            judged[column] = default
        elif entry["judged"]:
            judged[column] = entry["threshold"]
        else:
            left_out[column] = entry["why"]
    return judged, left_out
