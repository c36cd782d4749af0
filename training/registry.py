"""The MLflow model registry as training uses it: the champion, and registering a challenger once.

Alias and tag names are the registry contract's (`model_registry`). A version is
registered at most once per MLflow run: before creating one, the registry is
searched for a version of that run, so a retried register task finds the
version its first attempt made.
"""

from __future__ import annotations

import logging

import model_registry

log = logging.getLogger(__name__)


def champion(mlflow_client, name: str):
    """The `production` model version of `name`, or None (no model, or no alias yet)."""
    version = model_registry.production_version(mlflow_client.tracking_uri, name)
    return None if version is None else mlflow_client.get_model_version(name, version)


def load_version(name: str, version: str):
    import mlflow.sklearn

    return mlflow.sklearn.load_model(f"models:/{name}/{version}")


def version_of_run(mlflow_client, name: str, run_id: str):
    """The version already registered from `run_id`, or None."""
    found = mlflow_client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return min(found, key=lambda v: int(v.version)) if found else None


def ensure_registered_model(mlflow_client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.create_registered_model(
            name, description="Probability that a flight from NYC arrives more than 15 minutes late.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def register_once(mlflow_client, name: str, model_uri: str, model_id: str, run_id: str, tags: dict[str, str],
                  description: str):
    """The version of `run_id`, registered now unless it already is; tags, description and alias set."""
    ensure_registered_model(mlflow_client, name)
    existing = version_of_run(mlflow_client, name, run_id)
    if existing is None:
        mv = mlflow_client.create_model_version(name, source=model_uri, run_id=run_id, model_id=model_id,
                                                tags=tags, description=description)
        log.info("registered %s version %s from run %s", name, mv.version, run_id)
    else:
        mv = existing
        log.info("run %s is already %s version %s: not registering again", run_id, name, mv.version)
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(name, mv.version, key, value)
        mlflow_client.update_model_version(name, mv.version, description=description)
    model_registry.point_alias(mlflow_client, name, model_registry.CHALLENGER, mv.version)
    return mlflow_client.get_model_version(name, mv.version)
