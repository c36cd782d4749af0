"""Validation of a model version before it gets any traffic.

The holdout comes from the feature store, not from the training run: the labelled
flights of the version's test range (version tags `test_start`/`test_end`, and
`data_as_of` when present), joined point in time to the feature service by the
same function training used (`training.dataset.holdout`). So the check also
catches a model that only looked good on the data its run held in memory, and the
metrics are the same code as training's (`training.metrics.scores`).
The version passes when
- it loads and predicts (shape, probabilities in [0, 1]);
- its holdout metrics agree with the `test_*` metrics its run logged, within
  `serving_metric_tolerance` (absolute), for the metrics in `GATED_METRICS` that
  the run logged (at least one must be);
- its single-row `predict_proba` is about as fast as production's: both versions are
  timed interleaved, row by row, in the same process on the same rows, so a busy
  machine slows both alike; the candidate's p99 must be under the generous absolute cap
  `serving_p99_budget_ms`, and the request p99 it would give must be within
  `serving_latency_ratio` of production's (with no production version, the cap alone).
  A request is the model's time plus what the server spends around it (feature reads,
  the frame, the response): the median of that, from production's newest served rows,
  is added to both p99s, as the shadow judges it (`serving.rollout`). A model one
  millisecond slower in a 27 ms request is not a regression; the demo's drift-retrained
  gradient boosting is twice the logistic regression's model time. With no served rows
  yet, model time alone is compared.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

import model_registry
import settings
from features.compute import LABEL, model_frame
from model_registry import Tag
from training import metrics as quality

log = logging.getLogger(__name__)

GATED_METRICS = quality.RECHECKED
HOLDOUT_CAP = 50_000
LATENCY_ROWS = 300


class ValidationFailed(RuntimeError):
    """The version must not get traffic; the message says why, `numbers` has what was measured."""

    def __init__(self, reason: str, numbers: dict | None = None):
        super().__init__(reason)
        self.numbers = numbers or {}


def holdout(test_start: str, test_end: str, as_of: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """(model_frame, labels) of the flights in the version's test range, rebuilt as training built them.

    With `as_of` (the version tag `data_as_of`, when training sets it) only outcomes
    known by then count, so the holdout is the one the version was tested on.
    """
    from training.dataset import NoTrainingData, holdout as labelled_holdout

    try:
        joined = labelled_holdout(test_start, test_end, as_of or None, cap=HOLDOUT_CAP)
    except NoTrainingData as exc:
        raise ValidationFailed(str(exc)) from exc
    return model_frame(joined), joined[LABEL].to_numpy(dtype="int64")


def _p(timings: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(timings, 50)), "p99_ms": float(np.percentile(timings, 99))}


def single_row_latency_ms(model, frame: pd.DataFrame, rows: int = LATENCY_ROWS) -> dict[str, float]:
    """p50/p99 of predict_proba on one-row frames (after a short warm-up)."""
    return side_by_side_latency_ms([model], frame, rows)[0]


def side_by_side_latency_ms(models: list, frame: pd.DataFrame, rows: int = LATENCY_ROWS) -> list[dict[str, float]]:
    """p50/p99 of each model's predict_proba on the same one-row frames, timed interleaved.

    Row by row every model predicts once, in an order that rotates with the row, so
    whatever else the machine is doing at that moment slows each of them alike.
    """
    singles = [frame.iloc[[i % len(frame)]] for i in range(rows)]
    for one in singles[:10]:
        for model in models:
            model.probabilities(one)
    timings: list[list[float]] = [[] for _ in models]
    for i, one in enumerate(singles):
        for k in range(len(models)):
            j = (i + k) % len(models)
            t0 = time.perf_counter()
            models[j].probabilities(one)
            timings[j].append((time.perf_counter() - t0) * 1000.0)
    return [_p(t) for t in timings]


def latency_problems(candidate: dict, production: dict | None, ratio: float, cap_ms: float,
                     overhead_ms: float | None = None) -> list[str]:
    """Why the candidate is too slow, if it is: its model p99 over the cap, or its request p99 (model p99 plus
    `overhead_ms`, the time a request spends outside the model; none: model time alone) slower than
    production's by more than `ratio`."""
    problems = []
    if not candidate["p99_ms"] <= cap_ms:
        problems.append(f"single-row p99 latency {candidate['p99_ms']:.1f} ms > budget {cap_ms} ms")
    if production is None:
        return problems
    if overhead_ms is None:
        if not candidate["p99_ms"] <= ratio * production["p99_ms"]:
            problems.append(f"single-row p99 latency {candidate['p99_ms']:.1f} ms > {ratio} x production's "
                            f"{production['p99_ms']:.1f} ms, timed side by side")
    elif not candidate["p99_ms"] + overhead_ms <= ratio * (production["p99_ms"] + overhead_ms):
        problems.append(f"request p99 with its model {candidate['p99_ms'] + overhead_ms:.1f} ms > {ratio} x "
                        f"production's {production['p99_ms'] + overhead_ms:.1f} ms (single-row model p99 "
                        f"{candidate['p99_ms']:.1f} vs {production['p99_ms']:.1f} ms timed side by side, plus the "
                        f"{overhead_ms:.1f} ms production's requests spend outside the model)")
    return problems


def request_overhead_ms(version: str, rows: int = 2000) -> float | None:
    """Median time production's served requests spent outside the model (request latency minus model time),
    from its newest log rows; None when it has served none that say."""
    from serving.inference_log import MODEL_MS
    from serving.rollout import recent_rows

    served = recent_rows(version, at_least=rows)
    if served.empty or MODEL_MS not in served or "latency_ms" not in served:
        return None
    outside = (served["latency_ms"] - served[MODEL_MS]).dropna()
    outside = outside[outside >= 0]
    return float(np.median(outside)) if len(outside) else None


def compare(holdout_metrics: dict, logged: dict, tolerance: float) -> tuple[dict, list[str]]:
    """Per gated metric the logged value, the holdout value and the gap; and the disagreements."""
    rows, problems = {}, []
    for name in GATED_METRICS:
        key = f"{Tag.TEST_METRIC_PREFIX}{name}"
        if key not in logged:
            continue
        gap = abs(holdout_metrics[name] - logged[key])
        rows[name] = {"logged": logged[key], "holdout": holdout_metrics[name], "gap": gap}
        if not gap <= tolerance:  # also catches NaN
            problems.append(f"{name} {holdout_metrics[name]:.4f} on the holdout vs {logged[key]:.4f} "
                            f"logged (gap {gap:.4f} > tolerance {tolerance})")
    if not rows:
        problems.append(f"the run logged none of {[Tag.TEST_METRIC_PREFIX + m for m in GATED_METRICS]}: "
                        "nothing to compare")
    return rows, problems


def validate(name: str, version: str, cfg: settings.Settings | None = None) -> dict:
    """Every check; returns the numbers, or raises ValidationFailed naming every failed check."""
    from serving.model import LoadFailed, check_probabilities, load_version

    cfg = cfg or settings.get()
    mlflow_client = model_registry.client(cfg.mlflow_tracking_uri)
    tags = model_registry.version_tags(mlflow_client, name, version)
    test_start, test_end = Tag.range_start("test"), Tag.range_end("test")
    missing = [t for t in (test_start, test_end, Tag.DECISION_THRESHOLD) if not tags.get(t)]
    if missing:
        raise ValidationFailed(f"version {version} lacks the version tags {missing}")
    try:
        model = load_version(cfg.mlflow_tracking_uri, name, version, alias=model_registry.CANDIDATE)
    except LoadFailed as exc:
        raise ValidationFailed(str(exc)) from exc
    frame, labels = holdout(tags[test_start], tags[test_end], tags.get(Tag.DATA_AS_OF))
    try:
        probabilities = model.probabilities(frame)
        check_probabilities(probabilities, len(frame))
    except Exception as exc:
        raise ValidationFailed(f"version {version} cannot predict on the holdout: {type(exc).__name__}: {exc}") \
            from exc
    try:
        measured = quality.scores(labels, probabilities, model.threshold)
    except quality.SingleClass as exc:
        raise ValidationFailed(f"version {version}: the holdout cannot be scored: {exc}") from exc
    logged = mlflow_client.get_run(model.run_id).data.metrics if model.run_id else {}
    comparison, problems = compare(measured, logged, cfg.serving_metric_tolerance)
    production = _production_model(cfg, name, version)
    overhead = None
    if production is None:
        latency, production_latency = single_row_latency_ms(model, frame), None
    else:
        latency, production_latency = side_by_side_latency_ms([model, production], frame)
        overhead = request_overhead_ms(production.version)
    problems += latency_problems(latency, production_latency, cfg.serving_latency_ratio, cfg.serving_p99_budget_ms,
                                 overhead)
    numbers = {
        "version": str(version), "holdout_rows": int(len(frame)), "holdout_late_rate": float(labels.mean()),
        "test_start": tags[test_start], "test_end": tags[test_end], "threshold": model.threshold,
        "metrics": measured, "comparison": comparison, "tolerance": cfg.serving_metric_tolerance,
        "latency": latency, "p99_budget_ms": cfg.serving_p99_budget_ms,
        "production_version": production.version if production else None,
        "production_latency": production_latency, "latency_ratio_allowed": cfg.serving_latency_ratio,
        "request_overhead_ms": overhead,
    }
    if problems:
        raise ValidationFailed(f"version {version} failed validation: " + "; ".join(problems), numbers)
    log.info("version %s passed validation: %s", version, numbers)
    return numbers


def _production_model(cfg: settings.Settings, name: str, candidate: str):
    """The production version, loaded to be timed beside the candidate; None when there is none (or it is the
    candidate, or it no longer loads: then the cap alone judges)."""
    from serving.model import LoadFailed, load_version

    version = model_registry.production_version(cfg.mlflow_tracking_uri, name)
    if version is None or version == str(candidate):
        return None
    try:
        return load_version(cfg.mlflow_tracking_uri, name, version)
    except LoadFailed as exc:
        log.warning("production version %s does not load (%s): judging latency by the cap alone", version, exc)
        return None
