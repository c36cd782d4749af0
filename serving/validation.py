"""Validation of a model version before it gets any traffic.

The holdout comes from the feature store, not from the training run: the labelled
flights of the version's test range (version tags `test_start`/`test_end`, and
`data_as_of` when present), joined point in time to the feature service with
`get_historical_features`. So the check
also catches a model that only looked good on the data its run held in memory.
The version passes when
- it loads and predicts (shape, probabilities in [0, 1]);
- its holdout metrics agree with the `test_*` metrics its run logged, within
  `serving_metric_tolerance` (absolute), for the metrics in `GATED_METRICS` that
  the run logged (at least one must be);
- the p99 of single-row `predict_proba` is under `serving_p99_budget_ms`.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

import settings
from features.compute import LABEL, model_frame

log = logging.getLogger(__name__)

GATED_METRICS = ("roc_auc", "pr_auc", "brier")
HOLDOUT_CAP = 50_000
LATENCY_ROWS = 300
ENTITY_COLUMNS = ["origin", "tailnum", "carrier", "route"]


class ValidationFailed(RuntimeError):
    """The version must not get traffic; the message says why, `numbers` has what was measured."""

    def __init__(self, reason: str, numbers: dict | None = None):
        super().__init__(reason)
        self.numbers = numbers or {}


def labelled_flights(start: pd.Timestamp, end: pd.Timestamp, cap: int = HOLDOUT_CAP, seed: int = 0) -> pd.DataFrame:
    """Labelled flights scheduled in [start, end] from the offline flight table, at most `cap` (sampled).

    A flight delivered in two batches counts once, with its latest delivery (part
    files are read in batch order).
    """
    import pyarrow.dataset as ds

    from features.store import FLIGHTS_TABLE, read_table

    flights = read_table(FLIGHTS_TABLE, filters=(ds.field("event_timestamp") >= start.to_pydatetime())
                         & (ds.field("event_timestamp") <= end.to_pydatetime()))
    if flights.empty:
        return flights
    flights = flights.drop_duplicates("flight_id", keep="last")
    if len(flights) > cap:
        flights = flights.sample(cap, random_state=seed)
    return flights.sort_values("event_timestamp").reset_index(drop=True)


def with_features(flights: pd.DataFrame) -> pd.DataFrame:
    """The flights joined point in time to the feature service (one output row per flight)."""
    from features.repo import FEATURE_SERVICE
    from features.store import feature_store

    store = feature_store()
    entity_df = flights.copy()
    entity_df["tailnum"] = entity_df["tailnum"].astype("string").fillna("")  # no plane: no plane features
    joined = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service(FEATURE_SERVICE)
    ).to_df()
    return joined.sort_values(["event_timestamp", "flight_id"]).reset_index(drop=True)


def utc(stamp: str) -> pd.Timestamp:
    ts = pd.Timestamp(stamp)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def holdout(test_start: str, test_end: str, as_of: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """(model_frame, labels) of the flights in the version's test range.

    With `as_of` (the version tag `data_as_of`, when training sets it) only outcomes
    known by then count, so the holdout is the one the version was tested on.
    """
    flights = labelled_flights(utc(test_start), utc(test_end))
    if as_of and not flights.empty:
        flights = flights[flights["outcome_at"] <= utc(as_of)]
    if flights.empty:
        raise ValidationFailed(f"no labelled flights in the feature store between {test_start} and {test_end}")
    joined = with_features(flights)
    return model_frame(joined), joined[LABEL].to_numpy(dtype="int64")


def metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, log_loss, roc_auc_score

    both_classes = len(np.unique(labels)) == 2
    return {
        "roc_auc": float(roc_auc_score(labels, probabilities)) if both_classes else float("nan"),
        "pr_auc": float(average_precision_score(labels, probabilities)) if both_classes else float("nan"),
        "f1": float(f1_score(labels, probabilities >= threshold, zero_division=0)),
        "log_loss": float(log_loss(labels, np.clip(probabilities, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "brier": float(brier_score_loss(labels, probabilities)),
    }


def single_row_latency_ms(model, frame: pd.DataFrame, rows: int = LATENCY_ROWS) -> dict[str, float]:
    """p50/p99 of predict_proba on one-row frames (after a short warm-up)."""
    singles = [frame.iloc[[i % len(frame)]] for i in range(rows)]
    for one in singles[:10]:
        model.probabilities(one)
    timings = []
    for one in singles:
        t0 = time.perf_counter()
        model.probabilities(one)
        timings.append((time.perf_counter() - t0) * 1000.0)
    return {"p50_ms": float(np.percentile(timings, 50)), "p99_ms": float(np.percentile(timings, 99))}


def compare(holdout_metrics: dict, logged: dict, tolerance: float) -> tuple[dict, list[str]]:
    """Per gated metric the logged value, the holdout value and the gap; and the disagreements."""
    rows, problems = {}, []
    for name in GATED_METRICS:
        if f"test_{name}" not in logged:
            continue
        gap = abs(holdout_metrics[name] - logged[f"test_{name}"])
        rows[name] = {"logged": logged[f"test_{name}"], "holdout": holdout_metrics[name], "gap": gap}
        if not gap <= tolerance:  # also catches NaN
            problems.append(f"{name} {holdout_metrics[name]:.4f} on the holdout vs {logged[f'test_{name}']:.4f} "
                            f"logged (gap {gap:.4f} > tolerance {tolerance})")
    if not rows:
        problems.append(f"the run logged none of {['test_' + m for m in GATED_METRICS]}: nothing to compare")
    return rows, problems


def validate(name: str, version: str, cfg: settings.Settings | None = None) -> dict:
    """Every check; returns the numbers, or raises ValidationFailed naming every failed check."""
    from serving import registry
    from serving.model import LoadFailed, check_probabilities, load_version

    cfg = cfg or settings.get()
    mlflow_client = registry.client(cfg.mlflow_tracking_uri)
    tags = registry.version_tags(mlflow_client, name, version)
    missing = [t for t in ("test_start", "test_end", "decision_threshold") if not tags.get(t)]
    if missing:
        raise ValidationFailed(f"version {version} lacks the version tags {missing}")
    try:
        model = load_version(cfg.mlflow_tracking_uri, name, version, alias="candidate")
    except LoadFailed as exc:
        raise ValidationFailed(str(exc)) from exc
    frame, labels = holdout(tags["test_start"], tags["test_end"], tags.get("data_as_of"))
    try:
        probabilities = model.probabilities(frame)
        check_probabilities(probabilities, len(frame))
    except Exception as exc:
        raise ValidationFailed(f"version {version} cannot predict on the holdout: {type(exc).__name__}: {exc}") \
            from exc
    measured = metrics(labels, probabilities, model.threshold)
    logged = mlflow_client.get_run(model.run_id).data.metrics if model.run_id else {}
    comparison, problems = compare(measured, logged, cfg.serving_metric_tolerance)
    latency = single_row_latency_ms(model, frame)
    if not latency["p99_ms"] <= cfg.serving_p99_budget_ms:
        problems.append(f"single-row p99 latency {latency['p99_ms']:.1f} ms > budget {cfg.serving_p99_budget_ms} ms")
    numbers = {
        "version": str(version), "holdout_rows": int(len(frame)), "holdout_late_rate": float(labels.mean()),
        "test_start": tags["test_start"], "test_end": tags["test_end"], "threshold": model.threshold,
        "metrics": measured, "comparison": comparison, "tolerance": cfg.serving_metric_tolerance,
        "latency": latency, "p99_budget_ms": cfg.serving_p99_budget_ms,
    }
    if problems:
        raise ValidationFailed(f"version {version} failed validation: " + "; ".join(problems), numbers)
    log.info("version %s passed validation: %s", version, numbers)
    return numbers
