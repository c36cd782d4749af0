"""Fixtures of the training tests: a model name and experiment of their own on the session's MLflow."""

from __future__ import annotations

import uuid

import pytest

import settings


@pytest.fixture
def training_env(feature_data, mlflow_uri, monkeypatch) -> settings.Settings:
    """Settings for one test: its own registered model and experiment, one-week windows (fast)."""
    name = f"flight_delay_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLOPS_MODEL_NAME", name)
    monkeypatch.setenv("MLOPS_MLFLOW_EXPERIMENT", name)
    monkeypatch.setenv("MLOPS_TRAINING_WINDOW_WEEKS", "1")
    monkeypatch.setenv("MLOPS_DRIFT_TRAINING_WINDOW_WEEKS", "1")
    settings.get.cache_clear()
    yield settings.get()
    monkeypatch.undo()
    settings.get.cache_clear()
