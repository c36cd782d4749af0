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

import settings
from model_registry import production_version
from ops.airflow_api import AirflowClient


def _ids(items) -> list[int]:
    """Event references in an extra (datasets.FeatureTableEventRef, DriftReportEventRef): their ids."""
    out = []
    for item in items or []:
        ref = item["id"] if isinstance(item, dict) else item
        if ref is not None:  # an event whose id could not be matched
            out.append(int(ref))
    return out


def _by_version(events: list[dict], version: str) -> dict | None:
    matches = [e for e in events if str(e["extra"]["version"]) == version]
    return matches[-1] if matches else None


def training_batches(cfg: settings.Settings, version: str) -> list[str]:
    """The batches in the version's training set (version tag `training_batches`)."""
    import json

    import model_registry

    tags = model_registry.version_tags(model_registry.client(cfg.mlflow_tracking_uri), cfg.model_name, version)
    return json.loads(tags.get(model_registry.Tag.TRAINING_BATCHES) or "[]")


def chain(client: AirflowClient, cfg: settings.Settings, batches_of=training_batches) -> list[str]:
    """Lines from the production version back to its landing files. Every batch of the version's training
    set is followed (a drift-triggered version was started by a report, not by batches, but trained on them)."""
    lines = []
    version = production_version(cfg.mlflow_tracking_uri, cfg.model_name)
    if version is None:
        return [f"no production version of {cfg.model_name!r} yet"]
    lines.append(f"production model  {cfg.model_name} v{version}  ({cfg.mlflow_tracking_uri}/#/models/{cfg.model_name})")
    deployed = _by_version(client.asset_events("deployed_model", limit=1000), version)
    if deployed:
        previous = deployed["extra"]["previous_version"]
        lines.append(f"  deployed_model   event {deployed['id']} at {deployed['timestamp']}, "
                     + (f"previous v{previous}" if previous else "first deployment"))
    registered = _by_version(client.asset_events("registered_model", limit=1000), version)
    if registered is None:
        lines.append("  registered_model (no event for this version)")
        return lines
    r = registered["extra"]
    lines.append(f"  registered_model event {registered['id']}: MLflow run {r['run_id']}, "
                 f"trigger {r['trigger_reason']}")
    drift_ids = set(_ids(r["drift_report_events"]))
    for ev in client.asset_events("drift_report", limit=1000):
        if ev["id"] in drift_ids:
            x = ev["extra"]
            lines.append(f"  drift_report     event {ev['id']}: share {x['drift_share']} on "
                         f"v{x['model_version']}, {x['report_path']}")
    feature_ids = set(_ids(r["feature_table_events"]))
    trained_on = set(batches_of(cfg, version))
    followed = 0
    for ev in client.asset_events("feature_table", limit=1000):
        x = ev["extra"]
        if ev["id"] in feature_ids or x["batch_id"] in trained_on:
            followed += 1
            why = "triggered the run" if ev["id"] in feature_ids else "in the training set"
            lines.append(f"  feature_table    event {ev['id']}: batch {x['batch_id']}, {x['rows_accepted']} rows, "
                         f"{(x['event_time_min'] or '')[:10]}..{(x['event_time_max'] or '')[:10]} ({why})")
            for f in x["files"]:
                lines.append(f"    landing file   {f['name']} ({f['status']}, sha256 {f['sha256'][:12]}) "
                             f"-> {f['move_to']}")
    if not followed:
        lines.append("  feature_table    (no batch recorded on this version)")
    return lines


def main() -> int:
    cfg = settings.get()
    for line in chain(AirflowClient(), cfg):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
