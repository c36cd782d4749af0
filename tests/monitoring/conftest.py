"""Fixtures for monitoring: served-like rows from the real data, and an isolated storage root and model."""

from __future__ import annotations

import uuid

import pytest

from monitoring_helpers import historical_rows, ingest_month_elsewhere, reload_settings


@pytest.fixture(scope="session")
def served(feature_data, samples_dir, tmp_path_factory) -> dict:
    """Served-like rows: `reference` and `same_season` (disjoint, Jan-Mar) and `july` (drifted weather).

    The model is fitted on a third, separate Jan-Mar sample, so reference and
    served probabilities are both out-of-sample, as they are in production.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    from features.compute import model_frame

    q1 = historical_rows(9000, seed=1)
    train = q1.sample(n=3000, random_state=2)
    reference = q1.drop(train.index).sample(n=4000, random_state=3)
    same_season = q1.drop(train.index).drop(reference.index).reset_index(drop=True)
    reference = reference.reset_index(drop=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(tmp_path_factory.mktemp("july-home")))
        for var in ("MLOPS_FEAST_REGISTRY", "MLOPS_FEAST_ONLINE_STORE", "MLOPS_FEAST_OFFLINE_DIR"):
            mp.delenv(var, raising=False)
        cfg = reload_settings()
        try:
            ingest_month_elsewhere("2013-07", samples_dir, cfg.home)
            july = historical_rows(3000, seed=3)
        finally:
            mp.undo()
            reload_settings()
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(model_frame(train), train["is_late"])
    for frame in (reference, same_season, july):
        frame["probability"] = model.predict_proba(model_frame(frame))[:, 1]
        frame["prediction"] = (frame["probability"] >= 0.3).astype("int64")
    return {"reference": reference, "same_season": same_season, "july": july}


@pytest.fixture
def monitor_env(tmp_path, monkeypatch):
    """A fresh storage root and model name for one test; the session's Feast store (labels) stays."""
    model_name = f"flight_delay_{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("MLOPS_STORAGE_URL", (tmp_path / "storage").as_uri())
    monkeypatch.setenv("MLOPS_MODEL_NAME", model_name)
    monkeypatch.setenv("MLOPS_MONITOR_MIN_ROWS", "1000")
    monkeypatch.setenv("MLOPS_MONITOR_POLL_SECONDS", "0.2")
    cfg = reload_settings()
    yield cfg
    monkeypatch.undo()
    reload_settings()


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on a free port (the prod profile keeps storage in S3)."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_monitor_env(monitor_env, s3_endpoint, monkeypatch, tmp_path):
    """`monitor_env` with storage in a fresh S3 bucket."""
    import boto3

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"monitoring-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    monkeypatch.setenv("MLOPS_STORAGE_URL", f"s3://{bucket}/root")
    monkeypatch.setenv("MLOPS_S3_ENDPOINT_URL", s3_endpoint)
    return reload_settings()
