"""`make lineage`: from the production model back to the landing files, via the REST APIs.

    production model version (MLflow alias)
      <- deployed_model event
      <- registered_model event (training run, trigger reason)
      <- drift_report events, if the retrain was drift-triggered
      <- feature_table events (landing batches)
      <- landing files (names, content hashes, where they went)
      and, for flights delivered by the outcomes feed (the replay), the feed batches
      <- the feed's part files and quarantine records (a pushed row has no landing file)

`make lineage` traces the production version; `make lineage VERSIONS="3 7"` chosen versions,
`make lineage VERSIONS=--all` every version that was deployed.
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
    """The batches in the version's training set (version tag `training_batches`, or its run's artifact)."""
    import model_registry

    return model_registry.training_batches(model_registry.client(cfg.mlflow_tracking_uri), cfg.model_name, version)


def _feed_lines(traces) -> list[str]:
    """A feed batch has no landing file: the trace ends at the part files its pushes wrote, and says so."""
    lines = []
    for t in traces:
        flights = sum(t.rows.values())
        lines.append(f"  {t.feed} feed    {len(t.batch_ids)} pushes, clock {t.first_clock[:16]}..{t.last_clock[:16]}"
                     + (f", {flights} flights delivered" if t.rows else "")
                     + f", batches {t.batch_ids[0]} .. {t.batch_ids[-1]}")
        lines.append(f"    no landing file: these rows were pushed by the {t.feed} feed (features.feeds, "
                     f"e.g. make replay); the trace ends at its part files")
        for path in t.part_files:
            rows = f" ({t.rows[path]} rows of these batches)" if path in t.rows else ""
            lines.append(f"    part file      {path}{rows}")
        for path in t.missing_parts:
            lines.append(f"    part file      {path} (missing: not on this machine's offline store)")
        for q in t.quarantined:
            why = q.get("reason_counts") or q.get("reason")
            lines.append(f"    quarantined    {q.get('rows_quarantined')} row(s) by the push at {q.get('feed_clock')} "
                         f"({why}) -> {q['url']}")
    return lines


def deployed_versions(client: AirflowClient) -> list[str]:
    """Every version a deployed_model event names, oldest deployment first, once each."""
    out: list[str] = []
    for ev in sorted(client.asset_events("deployed_model", limit=1000), key=lambda e: e["id"]):
        version = str(ev["extra"]["version"])
        if version not in out:
            out.append(version)
    return out


def chain(client: AirflowClient, cfg: settings.Settings, batches_of=training_batches,
          version: str | None = None, trace_feeds=None) -> list[str]:
    """Lines from a version (the production version by default) back to its data. Every batch of the
    version's training set is followed (a drift-triggered version was started by a report, not by batches,
    but trained on them): a landing batch to its feature_table event and landing files, a feed batch
    (`features.feeds`, pushed by the replay) to the feed's part files and quarantine records."""
    if trace_feeds is None:
        from features.feeds import trace as trace_feeds
    lines = []
    if version is None:
        version = production_version(cfg.mlflow_tracking_uri, cfg.model_name)
        if version is None:
            return [f"no production version of {cfg.model_name!r} yet"]
        lines.append(f"production model  {cfg.model_name} v{version}  "
                     f"({cfg.mlflow_tracking_uri}/#/models/{cfg.model_name})")
    else:
        lines.append(f"model version     {cfg.model_name} v{version}  "
                     f"({cfg.mlflow_tracking_uri}/#/models/{cfg.model_name}/versions/{version})")
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
    feeds, landing = trace_feeds(batches_of(cfg, version))
    trained_on = set(landing)
    found = set()
    for ev in client.asset_events("feature_table", limit=1000):
        x = ev["extra"]
        if ev["id"] in feature_ids or x["batch_id"] in trained_on:
            found.add(x["batch_id"])
            why = "triggered the run" if ev["id"] in feature_ids else "in the training set"
            lines.append(f"  feature_table    event {ev['id']}: batch {x['batch_id']}, {x['rows_accepted']} rows, "
                         f"{(x['event_time_min'] or '')[:10]}..{(x['event_time_max'] or '')[:10]} ({why})")
            for f in x["files"]:
                lines.append(f"    landing file   {f['name']} ({f['status']}, sha256 {f['sha256'][:12]}) "
                             f"-> {f['move_to']}")
    for batch in sorted(trained_on - found):
        lines.append(f"  feature_table    batch {batch}: in the training set, no feature_table event found "
                     f"(among the last 1000)")
    lines.extend(_feed_lines(feeds))
    if not found and not trained_on and not feeds:
        lines.append("  feature_table    (no batch recorded on this version)")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m ops.lineage` traces the production version; `... 3 7` those versions; `... --all` every
    version that was deployed."""
    argv = sys.argv[1:] if argv is None else argv
    cfg = settings.get()
    client = AirflowClient()
    versions = deployed_versions(client) if argv == ["--all"] else argv or [None]
    for i, version in enumerate(versions):
        if i:
            print()
        for line in chain(client, cfg, version=version):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
