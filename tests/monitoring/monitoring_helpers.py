"""Helpers for the monitoring tests: served-like rows from the real data, inference logs, registered versions.

Served rows are built the way serving builds them: point-in-time features from
the Feast store for real flights, `model_frame`, and a small model's
probability. Jan-Mar comes from the session store (`feature_data`); July, whose
weather has drifted, is ingested once into a store of its own.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

import model_registry
import settings  # noqa: F401
from model_registry import Tag
from serving.inference_log import FILE_SUFFIX, version_url
from support import reload_settings  # noqa: F401  (the monitoring tests import it from here)
from training.tracking import REFERENCE_DIR, REFERENCE_FILE

ENTITY_COLUMNS = ["flight_id", "carrier", "flight", "tailnum", "origin", "dest", "route", "event_timestamp",
                  "distance", "dep_hour", "dep_dow", "is_late"]


def historical_rows(n: int, seed: int) -> pd.DataFrame:
    """`n` labelled flights of the current store with their point-in-time Feast features."""
    from features import names, store

    flights = store.read_offline_table(store.FLIGHTS_TABLE)
    entities = flights.sample(n=min(n, len(flights)), random_state=seed)[ENTITY_COLUMNS].copy()
    entities["tailnum"] = entities["tailnum"].fillna("").astype(str)
    fs = store.feature_store(apply=True)
    service = fs.get_feature_service(names.FEATURE_SERVICE)
    out = fs.get_historical_features(entity_df=entities, features=service).to_df()
    return out.sort_values(["event_timestamp", "flight_id"]).reset_index(drop=True)


def ingest_month_elsewhere(month: str, samples_dir: Path, home: Path) -> None:
    from features import ingest, samples, tasks

    (home / "samples").mkdir(parents=True)
    for kind in ("flights", "weather"):
        shutil.copy(samples_dir / f"{kind}_{month}.parquet", home / "samples")
    batch = ingest.Batch(f"monitoring-{month}").ingest(samples.drop(month))
    tasks.write_features(batch)


def reference_sample(rows: pd.DataFrame) -> pd.DataFrame:
    """The training reference artifact of the model contract: MODEL_FEATURES, is_late, probability."""
    from features.compute import MODEL_FEATURES, model_frame

    out = model_frame(rows)
    out["is_late"] = rows["is_late"].astype("int64").to_numpy()
    out["probability"] = rows["probability"].to_numpy()
    return out[MODEL_FEATURES + ["is_late", "probability"]]


def log_rows(rows: pd.DataFrame, model_name: str, version: str, start: datetime) -> pd.DataFrame:
    """Served rows shaped like the inference log contract, one request every 20 ms from `start`."""
    from features.compute import MODEL_FEATURES, model_frame

    n = len(rows)
    out = pd.DataFrame({
        "request_id": [uuid.uuid4().hex for _ in range(n)],
        "request_time": pd.Series(pd.date_range(start, periods=n, freq="20ms")).astype("datetime64[us, UTC]"),
        "model_name": model_name,
        "model_version": str(version),
        "carrier": rows["carrier"].to_numpy(),
        "flight": rows["flight"].astype("int64").to_numpy(),
        "tailnum": rows["tailnum"].astype(str).to_numpy(),
        "origin": rows["origin"].to_numpy(),
        "dest": rows["dest"].to_numpy(),
        "route": rows["route"].to_numpy(),
        "sched_dep_ts": rows["event_timestamp"].astype("datetime64[us, UTC]").to_numpy(),
        "flight_id": rows["flight_id"].to_numpy(),
    })
    features = model_frame(rows).reset_index(drop=True)
    out[MODEL_FEATURES] = features[MODEL_FEATURES]
    out["probability"] = rows["probability"].to_numpy()
    out["prediction"] = rows["prediction"].to_numpy()
    out["latency_ms"] = 4.0
    return out


def write_log(rows: pd.DataFrame, model_name: str, version: str, per_file: int = 500,
              start: datetime | None = None) -> list[str]:
    """Write served rows as the model server would: whole parquet files under inference/version=<v>/."""
    import storage

    store = storage.get()
    start = start or datetime.now(timezone.utc)
    logged = log_rows(rows, model_name, version, start)
    urls = []
    for i in range(0, len(logged), per_file):
        chunk = logged.iloc[i:i + per_file]
        stamp = (start + timedelta(seconds=i)).strftime("%Y%m%dT%H%M%S%fZ")
        url = f"{version_url(version, store)}/{stamp}-{uuid.uuid4().hex[:8]}{FILE_SUFFIX}"
        store.write_parquet(url, chunk)
        urls.append(url)
    return urls


def register_version(model_name: str, reference: pd.DataFrame, metrics: dict[str, float],
                     threshold: float = 0.3, alias: str | None = model_registry.PRODUCTION) -> str:
    """A model version whose run holds the training reference and test metrics (the model contract)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    mlflow.set_experiment("monitoring-tests")
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_metrics(metrics)
        path = Path(tmp) / REFERENCE_FILE
        reference.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=REFERENCE_DIR)
    try:
        client.create_registered_model(model_name)
    except MlflowException:
        pass  # already registered by an earlier call
    mv = client.create_model_version(model_name, source=f"runs:/{run.info.run_id}/reference",
                                     run_id=run.info.run_id, tags={Tag.DECISION_THRESHOLD: str(threshold)})
    if alias:
        client.set_registered_model_alias(model_name, alias, mv.version)
    return str(mv.version)
