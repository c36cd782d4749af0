"""All configuration, read from the environment in one place.

Every variable is listed in `.env.example`. The defaults give the embedded
stack (SQLite, local files under `.local/`), so nothing needs to be set.
This module is imported by DAG files, so it stays cheap: standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _float(name: str, default: float) -> float:
    return float(_env(name, str(default)))


def _int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


def _bool(name: str, default: bool) -> bool:
    return _env(name, "true" if default else "false").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Settings:
    # -- where things live
    home: Path
    storage_url: str
    s3_endpoint_url: str
    airflow_url: str
    airflow_db_url: str
    db_prefix: str
    local_s3_server: bool
    preload_task_libraries: bool
    batch_niceness: int
    drop_on_down: bool
    # -- distributed engine (empty broker URL: the LocalExecutor)
    celery_broker_url: str
    celery_result_backend: str
    redis_key_prefix: str
    celery_workers: int
    celery_worker_concurrency: int
    task_heartbeat_timeout_seconds: int
    task_retry_delay_seconds: int
    # -- dataops
    landing_poll_seconds: float
    landing_stable_seconds: float
    ingest_deadline_minutes: float  # a dropped file must reach feature_table within this (0: no check)
    feast_project: str
    feast_registry: str
    feast_online_store: str
    feast_offline_dir: Path
    # -- training
    mlflow_tracking_uri: str
    mlflow_backend_store_uri: str
    mlflow_artifacts_destination: str
    mlflow_experiment: str
    mlflow_artifact_root: str
    model_name: str
    training_window_weeks: int
    drift_training_window_weeks: int
    training_max_rows: int
    gate_metric: str
    gate_margin: float
    # -- serving
    model_server_url: str
    model_server_admin_token: str
    model_poll_seconds: float
    inference_flush_rows: int
    inference_flush_seconds: float
    serving_p99_budget_ms: float
    serving_latency_ratio: float
    serving_metric_tolerance: float
    deploy_timeout_seconds: float
    deploy_deadline_minutes: float
    # -- rollout of a new version on live traffic (serving.rollout)
    rollout: str  # staged: shadow, then canary, then all traffic | direct: straight to all traffic
    shadow_min_rows: int
    shadow_max_minutes: float
    shadow_queue_size: int
    shadow_sched_idle: bool  # the shadow's process in Linux's idle scheduling class (besides nice)
    canary_share: float
    canary_min_rows: int
    canary_max_minutes: float
    rollout_poll_seconds: float
    rollout_max_error_rate: float
    rollout_min_agreement: float
    rollout_max_score_psi: float
    rollout_min_labelled: int
    promotion_approval: str  # off | required: a person approves between the canary and full promotion
    promotion_approval_minutes: float  # no answer within this: rejected (production left alone)
    alert_webhook_url: str
    # -- monitoring
    monitor_window_days: float
    monitor_min_rows: int
    monitor_poll_seconds: float
    drift_share_threshold: float
    drift_column_threshold: float
    missing_share_margin: float
    drift_sample_cap: int
    quality_drop_margin: float
    calibration_gap_limit: float
    retrain_cooldown_minutes: float
    retrain_max_attempts: int
    retrain_min_new_labels: int
    retrain_label_wait_hours: float
    retrain_retry_minutes: float
    # -- the dashboard over time (an Evidently workspace, served by `evidently ui`)
    evidently_workspace: Path
    evidently_port: int


def load() -> Settings:
    """Read the environment now (tests change it between calls)."""
    home = Path(_env("MLOPS_HOME", str(REPO_ROOT / ".local"))).resolve()
    return Settings(
        home=home,
        storage_url=_env("MLOPS_STORAGE_URL", (home / "storage").as_uri()).rstrip("/"),
        s3_endpoint_url=_env("MLOPS_S3_ENDPOINT_URL", ""),
        airflow_url=_env("MLOPS_AIRFLOW_URL", "http://127.0.0.1:8080").rstrip("/"),
        airflow_db_url=_env("MLOPS_AIRFLOW_DB_URL", f"sqlite:///{home / 'airflow' / 'airflow.db'}"),
        db_prefix=_env("MLOPS_DB_PREFIX", "mlops_"),
        local_s3_server=_bool("MLOPS_LOCAL_S3_SERVER", False),
        preload_task_libraries=_bool("MLOPS_PRELOAD_TASK_LIBRARIES", True),
        batch_niceness=_int("MLOPS_BATCH_NICENESS", 10),
        drop_on_down=_bool("MLOPS_DROP_ON_DOWN", False),
        celery_broker_url=_env("MLOPS_CELERY_BROKER_URL", ""),
        celery_result_backend=_env("MLOPS_CELERY_RESULT_BACKEND", ""),
        redis_key_prefix=_env("MLOPS_REDIS_PREFIX", "mlops:"),
        celery_workers=_int("MLOPS_CELERY_WORKERS", 2),
        celery_worker_concurrency=_int("MLOPS_CELERY_WORKER_CONCURRENCY", 2),
        task_heartbeat_timeout_seconds=_int("MLOPS_TASK_HEARTBEAT_TIMEOUT_SECONDS", 300),
        task_retry_delay_seconds=_int("MLOPS_TASK_RETRY_DELAY_SECONDS", 300),
        landing_poll_seconds=_float("MLOPS_LANDING_POLL_SECONDS", 2.0),
        landing_stable_seconds=_float("MLOPS_LANDING_STABLE_SECONDS", 1.0),
        ingest_deadline_minutes=_float("MLOPS_INGEST_DEADLINE_MINUTES", 30.0),
        feast_project=_env("MLOPS_FEAST_PROJECT", "flight_delay"),
        feast_registry=_env("MLOPS_FEAST_REGISTRY", str(home / "feast" / "registry.db")),
        feast_online_store=_env("MLOPS_FEAST_ONLINE_STORE", str(home / "feast" / "online.db")),
        feast_offline_dir=Path(_env("MLOPS_FEAST_OFFLINE_DIR", str(home / "feast" / "offline"))),
        mlflow_tracking_uri=_env("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000").rstrip("/"),
        mlflow_backend_store_uri=_env("MLOPS_MLFLOW_BACKEND_STORE_URI", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"),
        mlflow_artifacts_destination=_env("MLOPS_MLFLOW_ARTIFACTS_DESTINATION", str(home / "mlflow" / "artifacts")),
        mlflow_experiment=_env("MLOPS_MLFLOW_EXPERIMENT", "flight_delay"),
        mlflow_artifact_root=_env("MLOPS_MLFLOW_ARTIFACT_ROOT", "mlflow-artifacts:/flight_delay"),
        model_name=_env("MLOPS_MODEL_NAME", "flight_delay"),
        training_window_weeks=_int("MLOPS_TRAINING_WINDOW_WEEKS", 0),
        drift_training_window_weeks=_int("MLOPS_DRIFT_TRAINING_WINDOW_WEEKS", 0),
        training_max_rows=_int("MLOPS_TRAINING_MAX_ROWS", 120_000),
        gate_metric=_env("MLOPS_GATE_METRIC", "roc_auc"),
        gate_margin=_float("MLOPS_GATE_MARGIN", 0.005),
        model_server_url=_env("MLOPS_MODEL_SERVER_URL", "http://127.0.0.1:8000").rstrip("/"),
        model_server_admin_token=_env("MLOPS_MODEL_SERVER_ADMIN_TOKEN", "local-dev-token"),
        model_poll_seconds=_float("MLOPS_MODEL_POLL_SECONDS", 30.0),
        inference_flush_rows=_int("MLOPS_INFERENCE_FLUSH_ROWS", 1000),
        inference_flush_seconds=_float("MLOPS_INFERENCE_FLUSH_SECONDS", 5.0),
        serving_p99_budget_ms=_float("MLOPS_SERVING_P99_BUDGET_MS", 250.0),
        serving_latency_ratio=_float("MLOPS_SERVING_LATENCY_RATIO", 1.5),
        serving_metric_tolerance=_float("MLOPS_SERVING_METRIC_TOLERANCE", 0.02),
        deploy_timeout_seconds=_float("MLOPS_DEPLOY_TIMEOUT_SECONDS", 120.0),
        deploy_deadline_minutes=_float("MLOPS_DEPLOY_DEADLINE_MINUTES", 30.0),
        rollout=_env("MLOPS_ROLLOUT", "staged").lower(),
        shadow_min_rows=_int("MLOPS_SHADOW_MIN_ROWS", 500),
        shadow_max_minutes=_float("MLOPS_SHADOW_MAX_MINUTES", 30.0),
        shadow_queue_size=_int("MLOPS_SHADOW_QUEUE_SIZE", 1000),
        shadow_sched_idle=_bool("MLOPS_SHADOW_SCHED_IDLE", True),
        canary_share=_float("MLOPS_CANARY_SHARE", 0.1),
        canary_min_rows=_int("MLOPS_CANARY_MIN_ROWS", 200),
        canary_max_minutes=_float("MLOPS_CANARY_MAX_MINUTES", 60.0),
        rollout_poll_seconds=_float("MLOPS_ROLLOUT_POLL_SECONDS", 5.0),
        rollout_max_error_rate=_float("MLOPS_ROLLOUT_MAX_ERROR_RATE", 0.01),
        rollout_min_agreement=_float("MLOPS_ROLLOUT_MIN_AGREEMENT", 0.9),
        rollout_max_score_psi=_float("MLOPS_ROLLOUT_MAX_SCORE_PSI", 0.2),
        rollout_min_labelled=_int("MLOPS_ROLLOUT_MIN_LABELLED", 500),
        promotion_approval=_env("MLOPS_PROMOTION_APPROVAL", "off").lower(),
        promotion_approval_minutes=_float("MLOPS_PROMOTION_APPROVAL_MINUTES", 24 * 60.0),
        alert_webhook_url=_env("MLOPS_ALERT_WEBHOOK_URL", ""),
        monitor_window_days=_float("MLOPS_MONITOR_WINDOW_DAYS", 7.0),
        monitor_min_rows=_int("MLOPS_MONITOR_MIN_ROWS", 2000),
        monitor_poll_seconds=_float("MLOPS_MONITOR_POLL_SECONDS", 5.0),
        drift_share_threshold=_float("MLOPS_DRIFT_SHARE_THRESHOLD", 0.08),  # two of the 23 model features
        drift_column_threshold=_float("MLOPS_DRIFT_COLUMN_THRESHOLD", 2.0),
        missing_share_margin=_float("MLOPS_MISSING_SHARE_MARGIN", 0.25),
        drift_sample_cap=_int("MLOPS_DRIFT_SAMPLE_CAP", 20_000),
        quality_drop_margin=_float("MLOPS_QUALITY_DROP_MARGIN", 0.05),
        calibration_gap_limit=_float("MLOPS_CALIBRATION_GAP_LIMIT", 0.05),
        retrain_cooldown_minutes=_float("MLOPS_RETRAIN_COOLDOWN_MINUTES", 5.0),
        retrain_max_attempts=_int("MLOPS_RETRAIN_MAX_ATTEMPTS", 3),
        retrain_min_new_labels=_int("MLOPS_RETRAIN_MIN_NEW_LABELS", 18_000),
        retrain_label_wait_hours=_float("MLOPS_RETRAIN_LABEL_WAIT_HOURS", 12.0),
        retrain_retry_minutes=_float("MLOPS_RETRAIN_RETRY_MINUTES", 30.0),
        evidently_workspace=Path(_env("MLOPS_EVIDENTLY_WORKSPACE", str(home / "evidently"))),
        evidently_port=_int("MLOPS_EVIDENTLY_PORT", 8001),
    )


@lru_cache(maxsize=1)
def get() -> Settings:
    """The settings of this process, read once."""
    return load()
