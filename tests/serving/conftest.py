"""Fixtures of the serving tests: small registered model versions and settings pointed at them.

The versions are logged per the model contract by `tests/sample_model.py` into the
session's MLflow server, each test module under its own model name, so tests of
different modules never see each other's aliases.
"""

from __future__ import annotations

import pytest

import settings
from serving_helpers import reload_settings


@pytest.fixture(scope="session")
def split(feature_data):
    """Train (sampled) and test (the newest 14 days) model frames from the session's feature store."""
    import sample_model

    return sample_model.split()


@pytest.fixture(scope="session")
def estimators(split) -> dict:
    """Two different good models (their probabilities differ), one trained on a skewed sample (passes offline
    validation, worse on live traffic) and one with the wrong feature count."""
    import sample_model

    return {
        "good": sample_model.fit(split, max_iter=40, seed=0),
        "other": sample_model.fit(split, max_iter=15, seed=1),
        "skewed": sample_model.fit_skewed(split),
        "retrained": sample_model.fit(split, max_iter=40, seed=1),  # like "good", another early-stopping split
        "wrong_features": sample_model.wrong_feature_count(split),
    }


@pytest.fixture
def serving_env(monkeypatch, tmp_path, mlflow_server):
    """Returns apply(model_name, **env): settings pointed at the session MLflow and a fresh storage root."""

    def apply(model_name: str, **env: str) -> settings.Settings:
        values = {
            "MLFLOW_TRACKING_URI": mlflow_server, "MLOPS_MODEL_NAME": model_name,
            "MLOPS_STORAGE_URL": (tmp_path / "storage").as_uri(), "MLOPS_MODEL_SERVER_ADMIN_TOKEN": "test-admin-token",
            "MLOPS_MODEL_POLL_SECONDS": "3600", "MLOPS_INFERENCE_FLUSH_SECONDS": "3600",
            "MLOPS_INFERENCE_FLUSH_ROWS": "100000", **env,
        }
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        return reload_settings()

    yield apply
    monkeypatch.undo()
    reload_settings()


@pytest.fixture(scope="session")
def register(mlflow_server, split, estimators):
    """register(name, kind="good", **options) -> version: log one version of `name` per the model contract.

    Kinds: "good", "other" (a second good model), "retrained" (close to "good"), "skewed" (`sample_model.fit_skewed`), "wrong_features" (loads, cannot
    predict on the model frame), "raising_pyfunc" (no sklearn flavour).
    """
    import sample_model

    def log_version(name: str, kind: str = "good", **options) -> str:
        if kind == "raising_pyfunc":
            return sample_model.register_raising_pyfunc(split, name, mlflow_server)
        if kind == "wrong_features":
            options.setdefault("logged_metrics", {"test_roc_auc": 0.7})
        return sample_model.register(estimators[kind], split, name, mlflow_server, **options)

    return log_version


def pytest_collection_modifyitems(items):
    """pytest resets warning filters per test; the server's own filter (serving.model) is re-applied here."""
    ignore = pytest.mark.filterwarnings("ignore:X does not have valid feature names:UserWarning")
    for item in items:
        if "tests/serving/" in str(item.path).replace("\\", "/"):
            item.add_marker(ignore)
