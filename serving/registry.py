"""The MLflow model registry as serving sees it: aliases and the deployment history.

Aliases (no stages): training sets `challenger`; serving moves `production` and
`previous`. The deployment history lives in model version tags, so the registry UI
and `search_model_versions` answer "which version served from when to when":
- `deployed_at` / `retired_at`: the latest serving interval of the version (ISO, UTC);
- `serving_history`: every interval, JSON `[[deployed_at, retired_at or null], ...]`;
- `promoted_at`, `previous_production`, `prior_previous`: the last promotion of the version
  and the `production`/`previous` versions it replaced (what a rollback restores);
- `rolled_back_at` / `rollback_reason`: set when the version's deployment was undone.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import settings

PRODUCTION = "production"
PREVIOUS = "previous"
CHALLENGER = "challenger"


def client(tracking_uri: str | None = None):
    from mlflow import MlflowClient

    uri = tracking_uri or settings.get().mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def now_iso() -> str:
    # Microseconds: a deployment and the next one can fall in the same second, and the
    # serving history is ordered by these stamps.
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc))


def alias_version(mlflow_client, name: str, alias: str) -> str | None:
    """The version an alias points to, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise


def point_alias(mlflow_client, name: str, alias: str, version: str | None) -> None:
    """Point `alias` at `version`; None removes the alias."""
    if version is None:
        mlflow_client.delete_registered_model_alias(name, alias)
    else:
        mlflow_client.set_registered_model_alias(name, alias, str(version))


def version_tags(mlflow_client, name: str, version: str) -> dict[str, str]:
    return dict(mlflow_client.get_model_version(name, str(version)).tags or {})


def mark_deployed(mlflow_client, name: str, version: str, when: str) -> None:
    """Open a serving interval for `version`."""
    history = _history(mlflow_client, name, version)
    if not history or history[-1][1] is not None:
        history.append([when, None])
    _set_history(mlflow_client, name, version, history)
    mlflow_client.set_model_version_tag(name, str(version), "deployed_at", history[-1][0])
    mlflow_client.delete_model_version_tag(name, str(version), "retired_at")


def mark_retired(mlflow_client, name: str, version: str, when: str) -> None:
    """Close the open serving interval of `version`, if it has one."""
    history = _history(mlflow_client, name, version)
    if history and history[-1][1] is None:
        history[-1][1] = when
        _set_history(mlflow_client, name, version, history)
        mlflow_client.set_model_version_tag(name, str(version), "retired_at", when)


def deployment_history(mlflow_client, name: str) -> list[dict]:
    """Every serving interval of every version, oldest first: {version, deployed_at, retired_at}."""
    rows = []
    for mv in mlflow_client.search_model_versions(f"name = '{name}'"):
        for start, end in json.loads((mv.tags or {}).get("serving_history") or "[]"):
            rows.append({"version": str(mv.version), "deployed_at": start, "retired_at": end})
    return sorted(rows, key=lambda r: (r["deployed_at"], r["retired_at"] or "9999"))


def _history(mlflow_client, name: str, version: str) -> list[list]:
    return json.loads(version_tags(mlflow_client, name, version).get("serving_history") or "[]")


def _set_history(mlflow_client, name: str, version: str, history: list[list]) -> None:
    mlflow_client.set_model_version_tag(name, str(version), "serving_history", json.dumps(history))
