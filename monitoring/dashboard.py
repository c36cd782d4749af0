"""The monitoring dashboard over time: an Evidently workspace, one project per registered model.

`report.build` hands every window's summary to `record`, which adds one run to the
model's project: a small Evidently snapshot of the window's figures, each a
`MeanValue` over a one-row frame grouped by the model version (`GroupBy`), so every
figure is a series per version (label = the version). The run carries the version as
tag (`v<N>`) and metadata (`model_version`, `window`), and its timestamp is the
window's last request, so the x axis is the traffic's time (event time in a replay).

Panels (created idempotently: fixed ids, the dashboard rewritten only when it differs):
- drifted share: the share of drifted columns Evidently reported, beside the policy's limit;
- top columns' drift scores: the `TOP_COLUMNS` highest column scores of each window;
- served quality: ROC AUC, log loss and calibration gap, once enough labels are known;
- feature freshness: per feature view, the median age (hours) of the values served (in minutes, the
  static plane attributes' 23,000 cut the axis labels).

The Evidently 0.7.23 local storage matches a panel's series by metric type and labels
first and only then by tags, so two series of one figure cannot be told apart by tags
alone: the version is a metric label (the `GroupBy` label) instead, and legends show it
with `{{label}}`.

`evidently ui --workspace <MLOPS_EVIDENTLY_WORKSPACE>` serves it (`make up` starts it).
A run's id is derived from model, version and window, so reporting a window again
replaces its run. Evidently is imported inside the functions only.

The UI picks up new runs while it runs (a file watcher), but not a project created while
it runs: in 0.7.23 the watcher reads the new project's metadata file as soon as it is
created, before it is written, and its thread dies on the JSON error. So the model's
project is created before the UI starts: `python -m monitoring.dashboard prepare`
(`make up` and the compose service `evidently` do it).
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import datetime, timezone
from pathlib import Path

import settings

log = logging.getLogger(__name__)

VERSION = "model_version"  # the grouping column of a run's frame: each figure's series per version
TAB = "Monitoring"
TOP_COLUMNS = 5
DRIFT_SHARE = "drift_share"
# The policy's limit beside the share: a reader sees which windows crossed it. (With one window the
# share alone also drew a flat axis whose one tick read "0" under a share of 0.304.)
DRIFT_SHARE_LIMIT = "drift_share_limit"
QUALITY = {"roc_auc": "ROC AUC", "log_loss": "log loss", "calibration_gap": "calibration gap"}
SCORE_PREFIX = "drift_score__"  # + column name
AGE_PREFIX = "age_h__"  # + feature view name


class Panel:
    """Titles of the dashboard's panels (the browser test looks for them)."""

    DRIFT_SHARE = "Share of drifted columns"
    TOP_COLUMNS = "Drift scores of the top columns"
    QUALITY = "Served quality"
    FRESHNESS = "Feature freshness (median age, hours)"
    ALL = (DRIFT_SHARE, TOP_COLUMNS, QUALITY, FRESHNESS)


_NAMESPACE = uuid.UUID("6f1d3c2e-8a41-4f4e-9c1b-2d7e5a9b0c13")


def _id(*parts: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, "/".join(parts))


def _finite(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


# -- the figures of one window -------------------------------------------------------------
def figures(summary: dict, rows) -> dict[str, float]:
    """The plotted values of one window, by column name of the run's frame (missing figures left out)."""
    from serving.inference_log import feature_age_column
    from features.names import VIEW_NAMES

    out: dict[str, float] = {}
    share = _finite(summary.get("drift_share"))
    if share is not None:
        out[DRIFT_SHARE] = share
    limit = _finite(summary.get("share_threshold"))
    if limit is not None:
        out[DRIFT_SHARE_LIMIT] = limit
    scores = {c: v for c, s in (summary.get("column_scores") or {}).items() if (v := _finite(s)) is not None}
    for column in sorted(scores, key=lambda c: (-scores[c], c))[:TOP_COLUMNS]:
        out[SCORE_PREFIX + column] = scores[column]
    quality = (summary.get("quality") or {}).get("figures") or {}
    for name in QUALITY:
        value = _finite(quality.get(name))
        if value is not None:
            out[name] = value
    for view in VIEW_NAMES:
        column = feature_age_column(view)
        if rows is not None and column in rows:
            import pandas as pd

            age = _finite(pd.to_numeric(rows[column], errors="coerce").median())
            if age is not None:
                out[AGE_PREFIX + view] = round(age / 3600.0, 4)
    return out


def _timestamp(window: dict) -> datetime:
    for key in ("end", "start"):
        if window.get(key):
            stamp = datetime.fromisoformat(str(window[key]))
            return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    return datetime.now(timezone.utc)


def snapshot(values: dict[str, float], *, model_name: str, version: str, window: dict):
    """The run of one window: a `GroupBy(MeanValue(column), VERSION)` per figure over a one-row frame."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import GroupBy, MeanValue

    if not values:
        raise ValueError("no figure to record")
    frame = pd.DataFrame({VERSION: [str(version)], **{k: [float(v)] for k, v in values.items()}})
    definition = DataDefinition(numerical_columns=list(values), categorical_columns=[VERSION])
    report = Report([GroupBy(MeanValue(column=c), VERSION) for c in values])
    # Naive UTC: the local workspace compares run timestamps with naive datetimes.
    return report.run(
        current_data=Dataset.from_pandas(frame, data_definition=definition),
        tags=[f"v{version}", model_name],
        metadata={VERSION: str(version), "window": str(window.get("id", "")), "model_name": model_name},
        timestamp=_timestamp(window).replace(tzinfo=None),
        name=f"{model_name} v{version} {window.get('id', '')}",
    )


# -- panels ----------------------------------------------------------------------------------
def _series(column: str, legend: str):
    """The panel series of one figure: every version's values (the GroupBy label is the version)."""
    from evidently.metrics import MeanValue
    from evidently.sdk.models import PanelMetric

    # The storage labels a GroupBy point with str() of its inner metric's config.
    inner = str(MeanValue(column=column).dict(exclude_none=True))
    return PanelMetric(legend=legend, metric="GroupByMetric",
                       metric_labels={"metric": inner, "column_name": VERSION})


def panels(model_name: str) -> list:
    """The dashboard's panels; their ids are fixed, so rebuilding them changes nothing."""
    from evidently.sdk.panels import line_plot_panel

    from features.names import MODEL_FEATURES, VIEW_NAMES

    specs = [
        (Panel.DRIFT_SHARE, "Evidently's share of drifted columns in each window, per model version, and the "
                            "limit above which the window counts as drifted",
         [_series(DRIFT_SHARE, "drifted share v{{label}}"), _series(DRIFT_SHARE_LIMIT, "limit v{{label}}")], "half"),
        (Panel.TOP_COLUMNS, f"Drift score of each window's {TOP_COLUMNS} highest-scoring columns (Wasserstein)",
         [_series(SCORE_PREFIX + c, f"{c} v{{{{label}}}}") for c in MODEL_FEATURES], "half"),
        (Panel.QUALITY, "On served flights whose outcome is known (log loss and calibration gap: lower is better)",
         [_series(name, f"{legend} v{{{{label}}}}") for name, legend in QUALITY.items()], "half"),
        (Panel.FRESHNESS, "Median age of the feature values served, per feature view",
         [_series(AGE_PREFIX + v, f"{v} v{{{{label}}}}") for v in VIEW_NAMES], "half"),
    ]
    out = []
    for title, subtitle, values, size in specs:
        panel = line_plot_panel(title=title, values=values, description=subtitle, size=size)
        panel.id = _id(model_name, "panel", title)
        out.append(panel)
    return out


def dashboard_model(model_name: str):
    from evidently.sdk.models import DashboardModel, DashboardTabModel

    plots = panels(model_name)
    tab = DashboardTabModel(id=_id(model_name, "tab", TAB), title=TAB, panels=[p.id for p in plots])
    return DashboardModel(tabs=[tab], panels=plots)


# -- the workspace ---------------------------------------------------------------------------
def workspace(path: str | Path | None = None):
    from evidently.ui.workspace import Workspace

    path = Path(path or settings.get().evidently_workspace)
    path.mkdir(parents=True, exist_ok=True)
    return Workspace(str(path))


def project(ws, model_name: str):
    """The model's project, created on first use, with its dashboard (rewritten only when it differs)."""
    from evidently.sdk.models import ProjectModel

    found = ws.get_project(_id(model_name, "project"))
    if found is None:
        found = ws.add_project(ProjectModel(id=_id(model_name, "project"), name=model_name,
                                            description=f"Monitoring windows of the registered model {model_name}"))
    wanted = dashboard_model(model_name)
    if ws.get_dashboard(found.id).dict() != wanted.dict():
        ws.save_dashboard(found.id, wanted)
    return found


def prepare(model_name: str | None = None, path: str | Path | None = None) -> str:
    """Create the model's project and dashboard (before `evidently ui` starts); returns the project id."""
    return str(project(workspace(path), model_name or settings.get().model_name).id)


def add_window(summary: dict, rows=None, path: str | Path | None = None) -> str:
    """Add the window's run to its model's project; returns the run id (the same for the same window)."""
    model_name, version, window = summary["model_name"], str(summary["model_version"]), summary["window"]
    ws = workspace(path)
    proj = project(ws, model_name)
    snap = snapshot(figures(summary, rows), model_name=model_name, version=version, window=window)
    run_id = _id(model_name, "run", version, str(window.get("id", "")))
    # Workspace.add_run draws a new id: write through its state with ours, so a window reported
    # again replaces its run instead of adding a second point.
    ws.state.write_snapshot(proj.id, run_id, snap.to_snapshot_model())
    return str(run_id)


def record(summary: dict, rows=None) -> str | None:
    """`add_window`, but a dashboard failure never stops monitoring: it is logged and skipped."""
    try:
        run_id = add_window(summary, rows)
    except Exception as exc:  # noqa: BLE001 - the report is saved; the dashboard is a view of it
        log.warning("dashboard: window %s of %s v%s not added to the Evidently workspace: %r",
                    (summary.get("window") or {}).get("id"), summary.get("model_name"),
                    summary.get("model_version"), exc)
        return None
    log.info("dashboard: window %s added as run %s", summary["window"].get("id"), run_id)
    return run_id


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m monitoring.dashboard")
    parser.add_argument("command", choices=["prepare"], help="create the model's project before `evidently ui` starts")
    parser.parse_args(argv)
    cfg = settings.get()
    print(f"Evidently project of {cfg.model_name}: {prepare()} in {cfg.evidently_workspace}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
