"""`make lineage`: from the production model back to the landing files, via the REST APIs.

    production model version (MLflow alias)
      <- deployed_model event
      <- registered_model event (training run, trigger reason)
      <- drift_report events, if the retrain was drift-triggered
      <- feature_table events (batches)
      <- landing files (names, content hashes, where they went)
"""

from __future__ import annotations

import sys

import httpx

import settings
from ops.airflow_api import AirflowClient


def production_version(cfg: settings.Settings) -> str | None:
    resp = httpx.get(f"{cfg.mlflow_tracking_uri}/api/2.0/mlflow/registered-models/alias",
                     params={"name": cfg.model_name, "alias": "production"}, timeout=10)
    if resp.status_code != 200:
        return None
    return str(resp.json()["model_version"]["version"])


def _ids(items) -> list[int]:
    """Event references in an extra: plain ids or dicts with an `id`."""
    out = []
    for item in items or []:
        out.append(int(item["id"] if isinstance(item, dict) else item))
    return out


def _by_version(events: list[dict], version: str) -> dict | None:
    matches = [e for e in events if str(e["extra"].get("version")) == version]
    return matches[-1] if matches else None


def chain(client: AirflowClient, cfg: settings.Settings) -> list[str]:
    lines = []
    version = production_version(cfg)
    if version is None:
        return [f"no production version of {cfg.model_name!r} yet"]
    lines.append(f"production model  {cfg.model_name} v{version}  ({cfg.mlflow_tracking_uri}/#/models/{cfg.model_name})")
    deployed = _by_version(client.asset_events("deployed_model", limit=1000), version)
    if deployed:
        previous = deployed["extra"].get("previous_version")
        lines.append(f"  deployed_model   event {deployed['id']} at {deployed['timestamp']}, "
                     + (f"previous v{previous}" if previous else "first deployment"))
    registered = _by_version(client.asset_events("registered_model", limit=1000), version)
    if registered is None:
        lines.append("  registered_model (no event for this version)")
        return lines
    r = registered["extra"]
    lines.append(f"  registered_model event {registered['id']}: MLflow run {r.get('run_id')}, "
                 f"trigger {r.get('trigger_reason')}")
    drift_ids = set(_ids(r.get("drift_report_events")))
    for ev in client.asset_events("drift_report", limit=1000):
        if ev["id"] in drift_ids:
            x = ev["extra"]
            lines.append(f"  drift_report     event {ev['id']}: share {x.get('drift_share')} on "
                         f"v{x.get('model_version')}, {x.get('report_path')}")
    feature_ids = set(_ids(r.get("feature_table_events")))
    if not feature_ids:
        lines.append("  feature_table    (none recorded: a drift-triggered run reads the whole store)")
    for ev in client.asset_events("feature_table", limit=1000):
        if ev["id"] in feature_ids:
            x = ev["extra"]
            lines.append(f"  feature_table    event {ev['id']}: batch {x['batch_id']}, {x['rows_accepted']} rows, "
                         f"{x['event_time_min'][:10]}..{x['event_time_max'][:10]}")
            for f in x["files"]:
                lines.append(f"    landing file   {f['name']} ({f.get('status')}, sha256 {f['sha256'][:12]}) "
                             f"-> {f.get('move_to')}")
    return lines


def main() -> int:
    cfg = settings.get()
    for line in chain(AirflowClient(), cfg):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
