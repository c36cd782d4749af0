"""Every Airflow Asset of the chain, defined once, with the type of its event `extra`.

The four DAGs know each other only through these assets. Names are fixed:
other parts and outside tools look them up by name. URIs are built from the
configured storage (`file://` in the embedded stack, `s3://` in compose).

An event's `extra` is the API between two DAGs. Each asset has a `TypedDict` of
its extra and the one function that builds it: producers emit what the builder
returns, consumers (and `ops/`) read the keys the TypedDict declares, and
`check_extra` verifies a real extra against its type (the producers call it
before emitting, the tests on what each producing task emitted).
"""

from __future__ import annotations

import types
import typing
from typing import Any, TypedDict

from airflow.sdk import Asset

import settings

_root = settings.get().storage_url


# -- feature_table: new features in the Feast offline store, materialized online ----------------
class LandingFileRecord(TypedDict):
    """One landing file of the batch and what became of it."""

    name: str
    kind: str | None  # flights | weather; None when the file could not be read
    sha256: str
    status: str  # accepted | quarantined | duplicate
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    move_to: str  # where the file went: processed/, quarantine/ or processed/_duplicates/


class FeatureTableExtra(TypedDict):
    batch_id: str
    content_hash: str | None  # of the accepted files' contents
    files: list[LandingFileRecord]
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    event_time_min: str | None  # ISO, the accepted rows' first and last hour
    event_time_max: str | None


feature_table = Asset(name="feature_table", uri=f"{_root}/features/feature_table", group="features")


def feature_table_extra(batch: dict) -> FeatureTableExtra:
    """The extra of one ingested batch (`features.ingest` summary)."""
    return FeatureTableExtra(
        batch_id=batch["batch_id"],
        content_hash=batch["content_hash"],
        files=[
            LandingFileRecord(**{key: f.get(key) for key in LandingFileRecord.__annotations__})
            for f in batch["files"]
        ],
        rows_in=batch["rows_in"],
        rows_accepted=batch["rows_accepted"],
        rows_quarantined=batch["rows_quarantined"],
        event_time_min=batch["event_time_min"],
        event_time_max=batch["event_time_max"],
    )


# -- registered_model: a version in the MLflow registry that passed the champion/challenger gate --
class FeatureTableEventRef(TypedDict):
    id: int | None
    batch_id: str


class DriftReportEventRef(TypedDict):
    id: int | None
    report_path: str
    model_version: str | None


class RegisteredModelExtra(TypedDict):
    model_name: str
    version: str
    run_id: str
    metrics: dict[str, float | None]  # the challenger's test-part metrics (training.metrics.METRICS)
    champion_version: str | None
    champion_metrics: dict[str, float | None] | None
    trigger_reason: str  # training.events: fresh_data | drift | manual
    gate_rule: str  # training.gate rules
    feature_table_events: list[FeatureTableEventRef]
    drift_report_events: list[DriftReportEventRef]


registered_model = Asset(name="registered_model", uri=f"{_root}/models/registered_model", group="models")


def registered_model_extra(
    *, model_name: str, version: str, run_id: str, metrics: dict, champion_version: str | None,
    champion_metrics: dict | None, trigger_reason: str, gate_rule: str, feature_table_events: list[dict],
    drift_report_events: list[dict],
) -> RegisteredModelExtra:
    return RegisteredModelExtra(
        model_name=model_name, version=str(version), run_id=run_id, metrics=metrics,
        champion_version=champion_version, champion_metrics=champion_metrics, trigger_reason=trigger_reason,
        gate_rule=gate_rule,
        feature_table_events=[FeatureTableEventRef(id=e["id"], batch_id=e["batch_id"]) for e in feature_table_events],
        drift_report_events=[
            DriftReportEventRef(id=e["id"], report_path=e["report_path"], model_version=e["model_version"])
            for e in drift_report_events
        ],
    )


# -- deployed_model: the version the model server answers with (alias `production`) --------------
class DeployedModelExtra(TypedDict):
    model_name: str
    version: str
    previous_version: str | None
    validation: dict  # what validation measured (serving.validation)
    smoke: dict  # what the smoke test measured (serving.tasks)
    rollout: dict | None  # shadow and canary on live traffic (serving.rollout): {stage: verdict}; None when direct


deployed_model = Asset(name="deployed_model", uri=f"{_root}/models/deployed_model", group="models")


def deployed_model_extra(
    *, model_name: str, version: str, previous_version: str | None, validation: dict, smoke: dict,
    rollout: dict | None = None,
) -> DeployedModelExtra:
    return DeployedModelExtra(model_name=model_name, version=str(version), previous_version=previous_version,
                              validation=validation, smoke=smoke, rollout=rollout)


# -- drift_report: a report on served traffic whose policy said "retrain" ------------------------
class ReportWindow(TypedDict):
    id: str
    start: str | None  # ISO, the first and last request of the window
    end: str | None
    departures_from: str | None  # ISO, the span of scheduled departures it judged (monitoring/windows.py)
    departures_to: str | None
    rows: int
    pending_rows: int | None  # served rows departing later: they carry over to the next window


class DriftReportExtra(TypedDict):
    report_path: str  # the Evidently HTML
    json_path: str
    drift_share: float
    drifted_columns: list[str]
    failed_tests: list[str]  # the report's failed critical tests: what the policy acted on, as the HTML names it
    missing_columns: list[str]  # features lost in the window: a data-quality incident, not drift
    prediction_drift: float | None
    quality: dict  # served quality on labelled rows (monitoring.report)
    model_name: str
    model_version: str
    window: ReportWindow
    reason: str  # drift | quality | drift+quality


drift_report = Asset(name="drift_report", uri=f"{_root}/reports/drift_report", group="monitoring")


def drift_report_extra(
    *, report_path: str, json_path: str, drift_share: float, drifted_columns: list[str],
    prediction_drift: float | None, quality: dict, model_name: str, model_version: str, window: dict, reason: str,
    failed_tests: list[str] = (), missing_columns: list[str] = (),
) -> DriftReportExtra:
    return DriftReportExtra(
        report_path=report_path, json_path=json_path, drift_share=drift_share, drifted_columns=list(drifted_columns),
        failed_tests=list(failed_tests), missing_columns=list(missing_columns),
        prediction_drift=prediction_drift, quality=quality, model_name=model_name, model_version=str(model_version),
        window=ReportWindow(**{key: window[key] for key in ReportWindow.__annotations__}), reason=reason,
    )


ALL = (feature_table, registered_model, deployed_model, drift_report)
EXTRA_TYPES: dict[str, type] = {
    feature_table.name: FeatureTableExtra,
    registered_model.name: RegisteredModelExtra,
    deployed_model.name: DeployedModelExtra,
    drift_report.name: DriftReportExtra,
}


# -- checking an extra against its type ---------------------------------------------------------
class ExtraMismatch(TypeError):
    """An event extra does not have the keys or types its asset declares."""


def check_extra(asset: Asset | str, extra: Any) -> Any:
    """Return `extra` unchanged if it matches the asset's TypedDict; raise ExtraMismatch naming every problem."""
    name = asset if isinstance(asset, str) else asset.name
    problems = _problems(EXTRA_TYPES[name], extra, name)
    if problems:
        raise ExtraMismatch(f"the {name} extra does not match datasets.{EXTRA_TYPES[name].__name__}: "
                            + "; ".join(problems))
    return extra


def _problems(kind: Any, value: Any, where: str) -> list[str]:
    if kind is Any:
        return []
    if typing.is_typeddict(kind):
        if not isinstance(value, dict):
            return [f"{where} is {type(value).__name__}, not a dict"]
        hints = typing.get_type_hints(kind)
        out = [f"{where} lacks {key!r}" for key in hints if key not in value]
        out += [f"{where} has the undeclared key {key!r}" for key in value if key not in hints]
        for key, hint in hints.items():
            if key in value:
                out += _problems(hint, value[key], f"{where}.{key}")
        return out
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        options = [_problems(a, value, where) for a in args]
        return [] if any(not p for p in options) else min(options, key=len)
    if kind is type(None):
        return [] if value is None else [f"{where} is {value!r}, not None"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where} is {type(value).__name__}, not a list"]
        return [p for i, item in enumerate(value) for p in _problems(args[0], item, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where} is {type(value).__name__}, not a dict"]
        return [p for k, v in value.items() for p in _problems(args[1], v, f"{where}[{k!r}]")]
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    return [] if ok else [f"{where} is {type(value).__name__} {value!r:.60}, not {kind.__name__}"]
