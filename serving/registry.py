"""The deployment history serving keeps in the MLflow registry, as model version tags.

Alias and tag names are the registry contract's (`model_registry`); this module
writes serving's part of it, so the registry UI and `search_model_versions` answer
"which version served from when to when":
- `deployed_at` / `retired_at`: the latest serving interval of the version (ISO, UTC);
- `serving_history`: every interval, JSON `[[deployed_at, retired_at or null], ...]`;
- `promoted_at`, `previous_production`, `prior_previous`: the last promotion of the version
  and the `production`/`previous` versions it replaced (what a rollback restores);
- `rolled_back_at` / `rollback_reason`: set when the version's deployment was undone.
"""

from __future__ import annotations

import json

from model_registry import Tag, version_tags


def mark_deployed(mlflow_client, name: str, version: str, when: str) -> None:
    """Open a serving interval for `version`."""
    history = _history(mlflow_client, name, version)
    if not history or history[-1][1] is not None:
        history.append([when, None])
    _set_history(mlflow_client, name, version, history)
    mlflow_client.set_model_version_tag(name, str(version), Tag.DEPLOYED_AT, history[-1][0])
    mlflow_client.delete_model_version_tag(name, str(version), Tag.RETIRED_AT)


def mark_retired(mlflow_client, name: str, version: str, when: str) -> None:
    """Close the open serving interval of `version`, if it has one."""
    history = _history(mlflow_client, name, version)
    if history and history[-1][1] is None:
        history[-1][1] = when
        _set_history(mlflow_client, name, version, history)
        mlflow_client.set_model_version_tag(name, str(version), Tag.RETIRED_AT, when)


def deployment_history(mlflow_client, name: str) -> list[dict]:
    """Every serving interval of every version, oldest first: {version, deployed_at, retired_at}."""
    rows = []
    for mv in mlflow_client.search_model_versions(f"name = '{name}'"):
        for start, end in json.loads((mv.tags or {}).get(Tag.SERVING_HISTORY) or "[]"):
            rows.append({"version": str(mv.version), "deployed_at": start, "retired_at": end})
    return sorted(rows, key=lambda r: (r["deployed_at"], r["retired_at"] or "9999"))


def _history(mlflow_client, name: str, version: str) -> list[list]:
    return json.loads(version_tags(mlflow_client, name, version).get(Tag.SERVING_HISTORY) or "[]")


def _set_history(mlflow_client, name: str, version: str, history: list[list]) -> None:
    mlflow_client.set_model_version_tag(name, str(version), Tag.SERVING_HISTORY, json.dumps(history))
