"""The model registry contract: alias names, version tag names, and "which version is production".

Training registers versions and sets `challenger`; serving moves `production` and
`previous`; monitoring and `ops/` only read. All of them take the names from here.
Aliases only, no stages. Light on purpose (standard library and httpx): the
monitoring trigger asks for the production version from the triggerer.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

# -- aliases ------------------------------------------------------------------------------------
PRODUCTION = "production"  # the version the model server answers with (moved by serving)
PREVIOUS = "previous"  # the production version before it (what a rollback restores)
CHALLENGER = "challenger"  # the newest version that passed training's gate
CANDIDATE = "candidate"  # the version in shadow or canary on the model server (set and removed by serving)


# -- version tags other stages read --------------------------------------------------------------
class Tag:
    DECISION_THRESHOLD = "decision_threshold"  # float in (0, 1): probability >= it means "late"
    FEATURE_SERVICE = "feature_service"
    TRIGGER_REASON = "trigger_reason"
    DATA_AS_OF = "data_as_of"  # ISO: only outcomes known by then were used
    TRAINING_BATCHES = "training_batches"  # the batch ids in the training set: `training_batches_tag`
    FEATURE_TABLE_EVENTS = "feature_table_events"  # JSON list of asset event ids
    DRIFT_REPORT_EVENTS = "drift_report_events"
    TEST_METRIC_PREFIX = "test_"  # test_<metric>: the test-part metrics, also logged as run metrics
    # serving's deployment history
    DEPLOYED_AT = "deployed_at"
    RETIRED_AT = "retired_at"
    SERVING_HISTORY = "serving_history"
    PROMOTED_AT = "promoted_at"
    PREVIOUS_PRODUCTION = "previous_production"
    PRIOR_PREVIOUS = "prior_previous"
    ROLLED_BACK_AT = "rolled_back_at"
    ROLLBACK_REASON = "rollback_reason"

    @staticmethod
    def range_start(part: str) -> str:
        """`train_start`, `valid_start`, `test_start`: ISO time of the part's first departure."""
        return f"{part}_start"

    @staticmethod
    def range_end(part: str) -> str:
        return f"{part}_end"


def now_iso() -> str:
    # Microseconds: a deployment and the next one can fall in the same second, and the
    # serving history is ordered by these stamps.
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


# -- reading aliases ------------------------------------------------------------------------------
class RegistryUnavailable(RuntimeError):
    """The tracking server did not answer the question (down, or an unexpected error)."""


def _absent(resp) -> bool:
    """The one rule for "missing": MLflow answers 404 for an unknown model or alias, and 400
    INVALID_PARAMETER_VALUE "... not found" for an alias that was never set. Anything else is an error."""
    if resp.status_code == 404:
        return True
    if resp.status_code != 400:
        return False
    try:
        body = resp.json()
    except ValueError:
        return False
    return body.get("error_code") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") \
        and "not found" in body.get("message", "").lower()


def alias_version(tracking_uri: str, model_name: str, alias: str, timeout: float = 10.0) -> str | None:
    """The version `alias` points to, or None when the model or the alias does not exist."""
    import httpx

    try:
        resp = httpx.get(f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias",
                         params={"name": model_name, "alias": alias}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise RegistryUnavailable(f"cannot ask {tracking_uri} for {model_name}@{alias}: {exc}") from exc
    if _absent(resp):
        return None
    if resp.status_code != 200:
        raise RegistryUnavailable(f"{tracking_uri} answered {resp.status_code} for {model_name}@{alias}: "
                                  f"{resp.text[:300]}")
    return str(resp.json()["model_version"]["version"])


def production_version(tracking_uri: str, model_name: str, timeout: float = 10.0) -> str | None:
    """The version behind `<model>@production`, or None while there is none."""
    return alias_version(tracking_uri, model_name, PRODUCTION, timeout)


# -- writing (MLflow client) ----------------------------------------------------------------------
def client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def point_alias(mlflow_client, name: str, alias: str, version: str | None) -> None:
    """Point `alias` at `version`; None removes the alias."""
    if version is None:
        mlflow_client.delete_registered_model_alias(name, alias)
    else:
        mlflow_client.set_registered_model_alias(name, alias, str(version))


def version_tags(mlflow_client, name: str, version: str) -> dict[str, str]:
    return dict(mlflow_client.get_model_version(name, str(version)).tags or {})


# -- the batches of a training set ------------------------------------------------------------------
# A version records the batches its training set came from (lineage follows them back). The outcomes
# feed adds a batch every hour (about 45 characters each), and MLflow caps a version tag at 100,000
# characters: a list that long lives in the run's artifact and the tag says where.
BATCHES_ARTIFACT = "training_batches.json"
BATCHES_TAG_LIMIT = 20_000  # characters of JSON kept in the tag itself


def training_batches_tag(batch_ids: list[str]) -> tuple[str, bool]:
    """(the `training_batches` tag's value, whether the list must also be logged as the run's
    `BATCHES_ARTIFACT`): the JSON list when it is short, else its size and ends and where the list is."""
    listed = json.dumps(list(batch_ids))
    if len(listed) <= BATCHES_TAG_LIMIT:
        return listed, False
    return json.dumps({"artifact": BATCHES_ARTIFACT, "count": len(batch_ids), "first": batch_ids[0],
                       "last": batch_ids[-1]}), True


def training_batches(mlflow_client, name: str, version: str) -> list[str]:
    """The batches of the version's training set, from its tag or, for a long list, its run's artifact."""
    import tempfile
    from pathlib import Path

    mv = mlflow_client.get_model_version(name, str(version))
    recorded = json.loads((mv.tags or {}).get(Tag.TRAINING_BATCHES) or "[]")
    if isinstance(recorded, list):
        return recorded
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(mlflow_client.download_artifacts(mv.run_id, recorded["artifact"], tmp)).read_text())
