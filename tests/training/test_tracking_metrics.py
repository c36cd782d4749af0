"""A candidate run logs each metric once, linked to its logged model.

`mlflow.sklearn.log_model` logs the run's metrics logged before it a second time (to link
them to the new logged model); a Postgres tracking backend rejects the second copy as a
duplicate primary key (seen in the compose run: `valid_roc_auc` in the server's error log).
Logged after the model, with its id, each metric is written once and belongs to the model.
"""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from training import tracking

pytestmark = pytest.mark.integration


def test_metrics_are_logged_once_and_linked_to_the_model(mlflow_uri, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    import settings

    monkeypatch.setenv("MLOPS_MLFLOW_EXPERIMENT", f"metrics_{uuid.uuid4().hex[:8]}")
    settings.get.cache_clear()
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = (x["a"] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    client = tracking.client()
    exp_id = tracking.experiment_id(client)
    metrics = {"valid_roc_auc": 0.71, "test_roc_auc": 0.69, "fit_seconds": 0.01}

    summary = tracking.log_candidate(
        client, exp_id, run_name="metrics-once", tags={"candidate": "logreg", "decision_threshold": "0.5"},
        params={"family": "logreg"}, metrics=metrics, model=model, input_example=x.head(3),
        reference=x.head(10),
    )

    assert summary["valid"]["roc_auc"] == 0.71 and summary["test"]["roc_auc"] == 0.69
    logged_model = client.get_logged_model(summary["model_id"])
    for key, value in metrics.items():
        history = client.get_metric_history(summary["run_id"], key)
        assert [m.value for m in history] == [value], key
        # Written after the logged model existed, so log_model had nothing to copy a second time.
        assert history[0].timestamp >= logged_model.creation_timestamp, key
    assert {m.key: m.value for m in logged_model.metrics} == metrics
    settings.get.cache_clear()
