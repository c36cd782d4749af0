"""Loading one registered model version into memory, checked before anyone uses it.

Per the model contract the version is a scikit-learn estimator logged with
`mlflow.sklearn`, whose `predict_proba(model_frame)[:, 1]` is the probability of a
late arrival, and whose version tag `decision_threshold` turns it into a decision.
A version that does not load, has no usable threshold or fails a quick predict on a
few synthetic rows raises `LoadFailed`; the caller keeps what it had.
"""

from __future__ import annotations

import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

import model_registry
from features.compute import MODEL_FEATURES
from model_registry import Tag


_thread_state = threading.local()
# Predictions on arrays (`takes_arrays`) would warn on every call that the array has no column names.
warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)


def limit_thread_pools() -> None:
    """One OpenMP/BLAS thread for predictions made in the calling thread (set once per thread).

    Thread pools cost more than they save on the few rows a server predicts on: a
    HistGradientBoosting single-row predict_proba took 47 ms (p50) with the default
    pool on a busy 2-core machine and 1.4 ms with one thread. The OpenMP limit only
    applies to the thread that sets it, hence once in each predicting thread.
    """
    if not getattr(_thread_state, "limited", False):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        _thread_state.limited = True


class LoadFailed(RuntimeError):
    """The version cannot serve; the message says why."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    run_id: str
    threshold: float
    estimator: Any = field(repr=False)
    alias: str = model_registry.PRODUCTION
    loaded_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    array_input: bool = False  # see `takes_arrays`

    def probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        limit_thread_pools()
        return self.estimator.predict_proba(frame.to_numpy() if self.array_input else frame)[:, 1]


def takes_arrays(estimator, frame: pd.DataFrame) -> bool:
    """True when the estimator can be given `frame.to_numpy()` instead of the frame, with the same result.

    scikit-learn's checks on a DataFrame cost about 0.7 ms per call, a third of a
    request. The array is only used when the estimator was fitted on exactly
    `MODEL_FEATURES` in this order (so no column can be misplaced) and gives
    identical probabilities on `frame`; otherwise (e.g. a pipeline that selects
    columns by name) the frame is passed as is.
    """
    if list(getattr(estimator, "feature_names_in_", [])) != MODEL_FEATURES:
        return False
    try:
        return np.array_equal(estimator.predict_proba(frame.to_numpy()), estimator.predict_proba(frame),
                              equal_nan=True)
    except Exception:
        return False


def sanity_frame() -> pd.DataFrame:
    """Rows any valid model must answer: typical values, and every feature missing."""
    typical = {name: 1.0 for name in MODEL_FEATURES}
    typical.update(distance=1000.0, dep_hour=12.0, dep_dow=2.0)
    return pd.DataFrame([typical, {name: np.nan for name in MODEL_FEATURES}], columns=MODEL_FEATURES)


def check_probabilities(probabilities: np.ndarray, rows: int) -> None:
    p = np.asarray(probabilities, dtype="float64")
    if p.shape != (rows,):
        raise LoadFailed(f"predict_proba gave shape {p.shape}, expected ({rows},)")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise LoadFailed("predict_proba gave values outside [0, 1]")


def threshold_of(tags: dict[str, str]) -> float:
    raw = tags.get(Tag.DECISION_THRESHOLD)
    try:
        threshold = float(raw)
    except (TypeError, ValueError):
        raise LoadFailed(f"version tag decision_threshold is {raw!r}, not a number") from None
    if not 0.0 < threshold < 1.0:
        raise LoadFailed(f"version tag decision_threshold is {threshold}, not in (0, 1)")
    return threshold


def load_version(tracking_uri: str, name: str, version: str, alias: str = model_registry.PRODUCTION) -> LoadedModel:
    """Download, load and check `name` version `version`. Raises LoadFailed with the reason."""
    mlflow_client = model_registry.client(tracking_uri)
    try:
        mv = mlflow_client.get_model_version(name, str(version))
        estimator = _load_estimator(tracking_uri, name, str(version))
    except LoadFailed:
        raise
    except Exception as exc:  # any failure to fetch or unpickle means: not servable
        raise LoadFailed(f"{name} version {version} does not load: {type(exc).__name__}: {exc}") from exc
    threshold = threshold_of(dict(mv.tags or {}))
    frame = sanity_frame()
    try:
        check_probabilities(LoadedModel(name, str(version), "", threshold, estimator).probabilities(frame), len(frame))
    except LoadFailed:
        raise
    except Exception as exc:
        raise LoadFailed(f"{name} version {version} cannot predict: {type(exc).__name__}: {exc}") from exc
    return LoadedModel(name, str(version), mv.run_id or "", threshold, estimator, alias,
                       array_input=takes_arrays(estimator, frame))


def _load_estimator(tracking_uri: str, name: str, version: str):
    import mlflow
    import mlflow.artifacts
    import mlflow.sklearn

    # `models:/` URIs are resolved through MLflow's process-wide registry URI, whatever
    # download_artifacts is given: point it at our server (one MLflow per process here).
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="model-") as tmp:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=tmp, tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
        estimator = mlflow.sklearn.load_model(path)
    if not hasattr(estimator, "predict_proba"):
        raise LoadFailed(f"{name} version {version}: {type(estimator).__name__} has no predict_proba")
    return estimator
