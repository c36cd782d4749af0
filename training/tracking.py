"""MLflow experiment runs: one per candidate, found again instead of logged twice.

Every candidate run carries the tags `training_run_key` (the Airflow run) and
`candidate` (the family). A retried candidate task finds its FINISHED run by
these tags and returns it, so retries never duplicate runs. The run's status
becomes FINISHED only after the model, metrics and reference are all logged.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import settings

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
# Monitoring's reference, a run artifact (monitoring reads it through these names):
# a sample of the training rows with MODEL_FEATURES, the label and the model's output.
REFERENCE_DIR = "reference"
REFERENCE_FILE = "reference.parquet"
REFERENCE_ARTIFACT = f"{REFERENCE_DIR}/{REFERENCE_FILE}"
REFERENCE_PREDICTION = "probability"  # the model's probability of a late arrival
REFERENCE_THRESHOLDS_FILE = "thresholds.json"  # per-column drift thresholds (monitoring.calibration)
REFERENCE_THRESHOLDS = f"{REFERENCE_DIR}/{REFERENCE_THRESHOLDS_FILE}"
REFERENCE_ROWS = 5_000


def client(cfg: settings.Settings | None = None):
    import mlflow
    from mlflow import MlflowClient

    cfg = cfg or settings.get()
    mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=cfg.mlflow_tracking_uri, registry_uri=cfg.mlflow_tracking_uri)


def experiment_id(mlflow_client, cfg: settings.Settings | None = None) -> str:
    """The experiment's id, created with the configured artifact location if missing."""
    from mlflow.exceptions import MlflowException

    cfg = cfg or settings.get()
    found = mlflow_client.get_experiment_by_name(cfg.mlflow_experiment)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow_client.create_experiment(cfg.mlflow_experiment, artifact_location=cfg.mlflow_artifact_root)
    except MlflowException:  # a parallel candidate task created it first
        return mlflow_client.get_experiment_by_name(cfg.mlflow_experiment).experiment_id


def finished_run(mlflow_client, exp_id: str, run_key: str, family: str):
    runs = mlflow_client.search_runs(
        [exp_id],
        filter_string=f"tags.training_run_key = '{run_key}' and tags.candidate = '{family}' "
                      "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0] if runs else None


def candidate_summary(run) -> dict:
    """What the gate needs of a candidate run (small enough for XCom)."""
    metrics = run.data.metrics
    tags = run.data.tags
    return {
        "family": tags["candidate"],
        "run_id": run.info.run_id,
        "model_uri": tags["model_uri"],
        "model_id": tags["model_id"],
        "decision_threshold": float(tags["decision_threshold"]),
        "valid": {k[len("valid_"):]: v for k, v in metrics.items() if k.startswith("valid_")},
        "test": {k[len("test_"):]: v for k, v in metrics.items() if k.startswith("test_")},
    }


def pip_requirements() -> list[str]:
    """Pinned to this environment: requirement inference is slow and guesses."""
    import cloudpickle
    import numpy
    import pandas
    import sklearn

    return [f"scikit-learn=={sklearn.__version__}", f"numpy=={numpy.__version__}",
            f"pandas=={pandas.__version__}", f"cloudpickle=={cloudpickle.__version__}"]


def log_candidate(
    mlflow_client, exp_id: str, *, run_name: str, tags: dict[str, str], params: dict, metrics: dict[str, float],
    model, input_example, reference, thresholds: dict | None = None,
) -> dict:
    """One candidate run: params, metrics, the model, the reference sample. Returns its summary."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    signature = infer_signature(input_example, model.predict_proba(input_example))
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags) as run:
        mlflow.log_params(params)
        info = mlflow.sklearn.log_model(
            sk_model=model, name=MODEL_ARTIFACT, signature=signature, input_example=input_example,
            pip_requirements=pip_requirements(), serialization_format="cloudpickle",
            # pyfunc (mlflow models serve) answers probabilities, like predict_proba.
            pyfunc_predict_fn="predict_proba",
        )
        # After the model, linked to it: log_model copies the run's earlier metrics onto the
        # logged model by logging them again, which a Postgres backend rejects as duplicate keys.
        mlflow.log_metrics(metrics, model_id=info.model_id)
        with tempfile.TemporaryDirectory(prefix="reference-") as tmp:
            path = Path(tmp) / REFERENCE_FILE
            reference.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path=REFERENCE_DIR)
            if thresholds is not None:
                mlflow.log_dict(thresholds, REFERENCE_THRESHOLDS)
        mlflow.set_tags({"model_uri": info.model_uri, "model_id": info.model_id})
    return candidate_summary(mlflow_client.get_run(run.info.run_id))


def tag_run(mlflow_client, run_id: str, tags: dict) -> None:
    for key, value in tags.items():
        mlflow_client.set_tag(run_id, key, value if isinstance(value, str) else json.dumps(value))
