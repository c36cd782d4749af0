"""The Evidently 0.7 report of one window of served traffic.

Three views, against the deployed version's training reference (the run
artifact `training.tracking.REFERENCE_ARTIFACT`: MODEL_FEATURES, `is_late`, `probability`):
- data drift: `DataDriftPreset` over MODEL_FEATURES;
- prediction drift: `ValueDrift` on `probability`;
- classification quality, once labels of served flights have arrived:
  `ClassificationPreset`, plus the figures (`training.metrics.scores`, the code
  training used) the policy compares with the metric training reported on its test split.

One verdict: the policy reads its decision from the snapshot's own tests
(`include_tests`), so the HTML shows as failed tests exactly what the policy
acted on, and nothing else fails:
- drift: one critical test, the share of drifted columns below
  `drift_share_threshold` (`DriftedColumnsCount`). Its failure is the data drift.
  Each column's score has a non-critical test (`ValueDrift` below the column's
  threshold): a drifted column is a warning in the HTML and is named in
  `drifted_columns`, and only their share decides. Each column's threshold was
  calibrated when the version was trained (`monitoring.calibration`: windows of the
  monitoring window's length inside the training period); a column that moves as
  much inside that period as between seasons is scored for information, without a
  test, and named in `not_judged` with the reason. A version without calibration is
  judged at `drift_column_threshold` for every column;
- missing values: one critical test per feature, its missing share at most the
  reference's plus `missing_share_margin` (`MissingValueCount`). A failure is a
  data-quality incident (serving lost a feature: a broken feed, a stale view), not
  drift: the column is left out of the drift share and named in `missing_columns`.
  A feature empty in the reference cannot be judged: reported, left out.
The prediction's score drift is a non-critical test too (shown, not acted on).

Every numerical column is scored with the normed Wasserstein distance. Its score
does not grow with the sample size (a statistical test's p-value does), and
windows bigger than `drift_sample_cap` rows are sampled down (seeded), so a big
window neither flags drift just for being big nor makes the report slow: its
cost depends on the columns, not the traffic.

A window of consecutive traffic spans a few days of weather, narrower than a
reference drawn from months of training data, so at the default column
threshold (0.1) weather columns drift even within the season: 2,000-row
February windows scored a share of 0.65-0.8 against a Jan-Mar reference, as did
July. The settings' thresholds decide how much of that counts.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import storage
from features.compute import LABEL, MODEL_FEATURES, model_frame
from model_registry import Tag
from serving.inference_log import PREDICTION as DECISION, PROBABILITY as PREDICTION
from training.metrics import METRICS
from training.tracking import REFERENCE_ARTIFACT, REFERENCE_PREDICTION, REFERENCE_THRESHOLDS

log = logging.getLogger(__name__)

DRIFT_METHOD = "wasserstein"
SEED = 20130101


class ReferenceMissing(RuntimeError):
    """The model version has no usable training reference: the window cannot be judged."""


@dataclass
class Reference:
    version: str
    run_id: str
    frame: pd.DataFrame
    metrics: dict[str, float] = field(default_factory=dict)
    decision_threshold: float = 0.5
    thresholds: dict | None = None  # monitoring.calibration.calibrate of the version's training part


@dataclass
class DriftResult:
    share: float  # Evidently's DriftedColumnsCount share over the judged columns
    drift_detected: bool  # the critical share test failed
    drifted: list[str]  # columns whose own (non-critical) drift test failed
    scores: dict[str, float]
    checked: list[str]
    thresholds: dict[str, float]  # each judged column's threshold (calibrated, or the one setting)
    not_judged: dict[str, str]  # columns left out of the verdict, and why
    missing_columns: list[str]  # the critical missing-share test failed: a data-quality incident
    empty_in_reference: list[str]
    failed_tests: list[str]  # the critical tests that failed, by the names the HTML shows
    prediction_score: float | None
    snapshot: object


# -- inputs ------------------------------------------------------------------------------
def load_reference(model_name: str, version: str, tracking_uri: str) -> Reference:
    """The version's training reference sample, its run metrics and decision threshold, from MLflow."""
    import mlflow.artifacts
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        mv = client.get_model_version(model_name, str(version))
        run = client.get_run(mv.run_id)
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp, tracking_uri=tracking_uri
            )
            frame = pd.read_parquet(path).rename(columns={REFERENCE_PREDICTION: PREDICTION})
    except (MlflowException, OSError) as exc:
        raise ReferenceMissing(f"{model_name} v{version}: no {REFERENCE_ARTIFACT} in its run ({exc})") from exc
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path=REFERENCE_THRESHOLDS, dst_path=tmp, tracking_uri=tracking_uri
            )
            thresholds = json.loads(Path(path).read_text())
    except (MlflowException, OSError):
        thresholds = None  # a version trained before calibration: the settings' one threshold
    return Reference(
        version=str(version),
        run_id=mv.run_id,
        frame=frame,
        metrics=dict(run.data.metrics),
        decision_threshold=float(mv.tags.get(Tag.DECISION_THRESHOLD, 0.5)),
        thresholds=thresholds,
    )


def sample(df: pd.DataFrame, cap: int, seed: int = SEED) -> pd.DataFrame:
    """At most `cap` rows, drawn uniformly with a fixed seed (the same window gives the same report)."""
    return df if len(df) <= cap else df.sample(n=cap, random_state=seed)


def served_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """MODEL_FEATURES (as the model saw them) plus the model's `probability`."""
    out = model_frame(rows)
    out[PREDICTION] = pd.to_numeric(rows[PREDICTION], errors="coerce") if PREDICTION in rows else np.nan
    return out


# -- drift ---------------------------------------------------------------------------------
FAILED = "FAIL"


def _has_values(*frames: pd.DataFrame, column: str) -> bool:
    return all(column in f and f[column].notna().any() for f in frames)


def _test_column(test: dict) -> str | None:
    return test["metric_config"]["params"].get("column")


def _test_kind(test: dict) -> str:
    return test["metric_config"]["params"]["type"].rsplit(":", 1)[-1]


def drift(current: pd.DataFrame, reference: pd.DataFrame, column_threshold: float,
          share_threshold: float, missing_margin: float = 0.25, calibrated: dict | None = None) -> DriftResult:
    """Data drift over MODEL_FEATURES, missing values and prediction drift, in one Evidently report.

    The verdict is the report's: see the module docstring for its tests. `calibrated`
    (`monitoring.calibration.calibrate` of the version) gives each column its own
    threshold and names the columns left out of the verdict; without it every column
    is judged at `column_threshold`.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, MissingValueCount, ValueDrift
    from evidently.tests import lt, lte

    from monitoring.calibration import thresholds as column_thresholds

    limits, left_out = column_thresholds(calibrated, column_threshold)
    empty_ref = [c for c in MODEL_FEATURES if reference[c].isna().all()]
    judged = [c for c in MODEL_FEATURES if c not in empty_ref]
    ref_missing = {c: float(reference[c].isna().mean()) for c in judged}
    missing_limit = {c: round(min(1.0, ref_missing[c] + missing_margin), 4) for c in judged}
    missing = [c for c in judged if current[c].isna().mean() > missing_limit[c]]
    present = [c for c in judged if c not in missing and current[c].notna().any()]
    checked = [c for c in present if c not in left_out]
    if not checked:
        raise ValueError(f"no feature to compare: missing in the window {missing}, empty in the reference {empty_ref}")
    columns = judged + ([PREDICTION] if _has_values(current, reference, column=PREDICTION) else [])
    definition = DataDefinition(numerical_columns=columns)
    metrics = [DriftedColumnsCount(columns=checked, drift_share=share_threshold, num_method=DRIFT_METHOD,
                                   num_threshold=column_threshold,
                                   per_column_threshold={c: limits[c] for c in checked}, tests=[],
                                   share_tests=[lt(share_threshold, is_critical=True)])]
    metrics += [ValueDrift(column=c, method=DRIFT_METHOD, threshold=limits[c],
                           tests=[lt(limits[c], is_critical=False)]) for c in checked]
    # Left out of the verdict: scored for information, no test.
    metrics += [ValueDrift(column=c, method=DRIFT_METHOD, tests=[]) for c in present if c in left_out]
    metrics += [MissingValueCount(column=c, tests=[], share_tests=[lte(missing_limit[c], is_critical=True)])
                for c in judged]
    if PREDICTION in columns:
        metrics.append(ValueDrift(column=PREDICTION, method=DRIFT_METHOD, threshold=column_threshold,
                                  tests=[lt(column_threshold, is_critical=False)]))
    snapshot = Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    out = snapshot.dict()
    scores = {m["config"]["column"]: float(m["value"]) for m in out["metrics"]
              if m["config"].get("type", "").endswith(":ValueDrift")}
    share = next(float(m["value"]["share"]) for m in out["metrics"]
                 if m["config"].get("type", "").endswith(":DriftedColumnsCount"))
    tests = out["tests"]
    failed = [t for t in tests if t["status"] == FAILED]
    not_passed = [t for t in tests if t["status"] != "SUCCESS"]
    return DriftResult(
        share=share,
        drift_detected=any(_test_kind(t) == "DriftedColumnsCount" for t in failed),
        drifted=[c for c in checked if any(_test_kind(t) == "ValueDrift" and _test_column(t) == c
                                           for t in not_passed)],
        scores={c: round(scores[c], 4) for c in present},
        checked=checked,
        thresholds={c: limits[c] for c in checked},
        not_judged={c: left_out[c] for c in present if c in left_out},
        missing_columns=[c for c in judged if any(_test_kind(t) == "MissingValueCount" and _test_column(t) == c
                                                  for t in failed)],
        empty_in_reference=empty_ref,
        failed_tests=[t["name"] for t in failed],
        prediction_score=round(scores[PREDICTION], 4) if PREDICTION in scores else None,
        snapshot=snapshot,
    )


# -- quality -------------------------------------------------------------------------------
def quality_figures(labels: pd.Series, probability: pd.Series, prediction: pd.Series) -> dict[str, float | None]:
    """`training.metrics.scores` of served predictions (F1 of the served 0/1 decisions), the observed late
    rate, the mean predicted probability and the calibration gap (predicted minus observed).

    With one class only in the labels the rank metrics are undefined: None.
    """
    from training import metrics

    y = labels.astype(int).to_numpy()
    try:
        figures: dict[str, float | None] = metrics.scores(y, probability.astype(float).to_numpy(),
                                                          decisions=prediction.astype(int).to_numpy())
    except metrics.SingleClass:
        figures = {name: None for name in metrics.METRICS}
    mean_probability = float(probability.astype(float).mean())
    return {**figures, "late_rate": float(y.mean()), "mean_probability": mean_probability,
            "calibration_gap": mean_probability - float(y.mean())}


def labelled(rows: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Served rows whose label is known: is_late, probability, prediction (served, else at the threshold)."""
    if LABEL not in rows or PREDICTION not in rows:
        return pd.DataFrame({LABEL: pd.Series(dtype="int64"), PREDICTION: pd.Series(dtype="float64"),
                             DECISION: pd.Series(dtype="int64")})
    known = rows[rows[LABEL].notna() & rows[PREDICTION].notna()]
    decision = known[DECISION] if DECISION in known else (known[PREDICTION] >= threshold).astype(int)
    return pd.DataFrame({
        LABEL: known[LABEL].astype(int),
        PREDICTION: known[PREDICTION].astype(float),
        DECISION: decision.fillna(0).astype(int),
    })


def quality_snapshot(current: pd.DataFrame, reference: pd.DataFrame, threshold: float):
    """Evidently's ClassificationPreset on labelled served rows (reference: the training sample)."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    definition = DataDefinition(
        numerical_columns=[PREDICTION],
        classification=[BinaryClassification(target=LABEL, prediction_probas=PREDICTION)],
    )
    ref = reference[[LABEL, PREDICTION]].dropna() if _has_values(reference, column=LABEL) else None
    return Report([ClassificationPreset(probas_threshold=threshold)]).run(
        current_data=Dataset.from_pandas(current[[LABEL, PREDICTION]], data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition) if ref is not None else None,
    )


def quality(rows: pd.DataFrame, ref: Reference, metric: str, min_rows: int, cap: int,
            evidently: bool = True) -> tuple[dict, object | None]:
    """The quality figures of the window (and Evidently's view, on at most `cap` rows) once enough labels are known."""
    known = labelled(rows, ref.decision_threshold)
    reference = {m: ref.metrics[f"{Tag.TEST_METRIC_PREFIX}{m}"] for m in METRICS
                 if f"{Tag.TEST_METRIC_PREFIX}{m}" in ref.metrics}
    out = {"metric": metric, "value": None, "reference": reference.get(metric),
           "labelled_rows": int(len(known)), "figures": None, "reference_figures": reference}
    if len(known) < min_rows or known[LABEL].nunique() < 2:
        return out, None
    figures = quality_figures(known[LABEL], known[PREDICTION], known[DECISION])
    out.update(value=figures.get(metric), figures=figures)
    if not evidently:
        return out, None
    return out, quality_snapshot(sample(known, cap), sample(ref.frame, cap), ref.decision_threshold)


def calibration_gap_limit(ref: Reference) -> float | None:
    return ((ref.thresholds or {}).get("calibration_gap") or {}).get("limit")


# -- output --------------------------------------------------------------------------------
def report_url(model_name: str, version: str, window: str, suffix: str) -> str:
    return storage.get().url("reports", model_name, f"v{version}", f"{window}{suffix}")


def save_html(snapshot, url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        snapshot.save_html(str(path))
        storage.get().write_bytes(url, path.read_bytes())


def build(rows: pd.DataFrame, ref: Reference, *, model_name: str, window: dict, cfg,
          min_labelled_rows: int) -> dict:
    """Run the views on one window, save HTML and JSON under reports/, return the summary."""
    t0 = time.monotonic()
    current = served_frame(sample(rows, cfg.drift_sample_cap))
    reference = served_frame(sample(ref.frame, cfg.drift_sample_cap))
    result = drift(current, reference, cfg.drift_column_threshold, cfg.drift_share_threshold,
                   cfg.missing_share_margin, calibrated=ref.thresholds)
    quality_summary, quality_snap = quality(rows, ref, cfg.gate_metric, min_labelled_rows, cfg.drift_sample_cap)
    quality_summary["calibration_gap_limit"] = calibration_gap_limit(ref)
    html = report_url(model_name, ref.version, window["id"], ".html")
    save_html(result.snapshot, html)
    if quality_snap is not None:
        quality_summary["report_path"] = report_url(model_name, ref.version, window["id"], ".quality.html")
        save_html(quality_snap, quality_summary["report_path"])
    summary = {
        "model_name": model_name,
        "model_version": ref.version,
        "run_id": ref.run_id,
        "window": window,
        "rows": int(len(rows)),
        "sampled_rows": int(len(current)),
        "reference_rows": int(len(reference)),
        "drift_share": round(result.share, 4),
        "drift_detected": result.drift_detected,
        "drifted_columns": result.drifted,
        "missing_columns": result.missing_columns,
        "failed_tests": result.failed_tests,
        "column_scores": result.scores,
        "column_thresholds": result.thresholds,
        "not_judged": result.not_judged,
        "calibrated": ref.thresholds is not None,
        "empty_in_reference": result.empty_in_reference,
        "prediction_drift": result.prediction_score,
        "method": DRIFT_METHOD,
        "column_threshold": cfg.drift_column_threshold,
        "share_threshold": cfg.drift_share_threshold,
        "quality": quality_summary,
        "report_path": html,
        "json_path": report_url(model_name, ref.version, window["id"], ".json"),
    }
    summary["seconds"] = round(time.monotonic() - t0, 2)
    storage.get().write_json(summary["json_path"], {
        "summary": summary,
        "drift": result.snapshot.dict(),
        "quality": quality_snap.dict() if quality_snap is not None else None,
    })
    log.info("report of %s v%s window %s (%d rows, %d sampled) in %.1fs: %s",
             model_name, ref.version, window["id"], len(rows), len(current), summary["seconds"], html)
    from monitoring import dashboard

    dashboard.record(summary, rows)  # the dashboard over time; its failure is logged, never raised
    return summary
