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


@dataclass(frozen=True)
class Settings:
    home: Path
    storage_url: str
    airflow_url: str
    airflow_db_url: str
    s3_endpoint_url: str
    landing_poll_seconds: float
    landing_stable_seconds: float
    feast_project: str
    feast_registry: str
    feast_online_store: str
    feast_offline_dir: Path
    mlflow_tracking_uri: str
    model_name: str
    model_server_url: str
    model_server_admin_token: str

    @property
    def is_s3(self) -> bool:
        return self.storage_url.startswith("s3://")


def load() -> Settings:
    """Read the environment now (tests change it between calls)."""
    home = Path(_env("MLOPS_HOME", str(REPO_ROOT / ".local"))).resolve()
    return Settings(
        home=home,
        storage_url=_env("MLOPS_STORAGE_URL", (home / "storage").as_uri()).rstrip("/"),
        airflow_url=_env("MLOPS_AIRFLOW_URL", "http://127.0.0.1:8080").rstrip("/"),
        airflow_db_url=_env("MLOPS_AIRFLOW_DB_URL", f"sqlite:///{home / 'airflow' / 'airflow.db'}"),
        s3_endpoint_url=_env("MLOPS_S3_ENDPOINT_URL", ""),
        landing_poll_seconds=_float("MLOPS_LANDING_POLL_SECONDS", 2.0),
        landing_stable_seconds=_float("MLOPS_LANDING_STABLE_SECONDS", 1.0),
        feast_project=_env("MLOPS_FEAST_PROJECT", "flight_delay"),
        feast_registry=_env("MLOPS_FEAST_REGISTRY", str(home / "feast" / "registry.db")),
        feast_online_store=_env("MLOPS_FEAST_ONLINE_STORE", str(home / "feast" / "online.db")),
        feast_offline_dir=Path(_env("MLOPS_FEAST_OFFLINE_DIR", str(home / "feast" / "offline"))),
        mlflow_tracking_uri=_env("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"),
        model_name=_env("MLOPS_MODEL_NAME", "flight_delay"),
        model_server_url=_env("MLOPS_MODEL_SERVER_URL", "http://127.0.0.1:8000"),
        model_server_admin_token=_env("MLOPS_MODEL_SERVER_ADMIN_TOKEN", "local-dev-token"),
    )


@lru_cache(maxsize=1)
def get() -> Settings:
    """The settings of this process, read once."""
    return load()
