"""The bodies of the training DAG's tasks, as plain functions (`dags/training.py` wires them).

    trigger   = events.read_trigger(...)                 which events, and why
    dataset   = build_training_set(run_key, trigger)     point-in-time set in storage
    candidate = train_candidate(family, dataset, trigger)   one per family, in parallel
    decision  = gate(candidates, dataset, trigger)       challenger vs champion
    extra     = register(decision, dataset, trigger)     only when decision["register"]

Only small dicts pass between them (ids, URLs, metrics); the training set itself
is a parquet file under `<storage>/training/<run key>/`. Each step is idempotent
per run key: the set is built once, a candidate run is logged once, a version is
registered once.
"""

from __future__ import annotations

import json
import logging
import re

import settings
import storage
import datasets
import model_registry
from model_registry import Tag
from training import events, gate as gate_rules, split as splitting

log = logging.getLogger(__name__)


def run_key(dag_id: str, run_id: str) -> str:
    """A storage- and tag-safe key of one Airflow run."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dag_id}__{run_id}")


def _dataset_url(key: str, name: str) -> str:
    return storage.get().url("training", key, name)


# -- the training set -------------------------------------------------------------------------
def champion_data_as_of(cfg: settings.Settings) -> tuple[str | None, str | None]:
    """(the `production` version, its `data_as_of` tag), each None when missing."""
    import model_registry

    version = model_registry.production_version(cfg.mlflow_tracking_uri, cfg.model_name)
    if version is None:
        return None, None
    tags = model_registry.version_tags(model_registry.client(cfg.mlflow_tracking_uri), cfg.model_name, version)
    return version, tags.get(Tag.DATA_AS_OF)


def new_labels_since_champion(cfg: settings.Settings | None = None) -> tuple[int, str | None, str | None]:
    """(labelled flights departing after the champion's `data_as_of`, that time, the champion's version).

    Without a champion (or a champion without the tag) every labelled flight is new: (count, None, version).
    """
    cfg = cfg or settings.get()
    version, as_of = champion_data_as_of(cfg)
    return labelled_flights_since(as_of), as_of, version


def labelled_flights_since(as_of: str | None) -> int:
    """Labelled flights (each once) departing after `as_of` (None: all of them)."""
    import pyarrow.dataset as ds

    from features.compute import utc
    from features.store import FLIGHTS_TABLE, read_offline_table

    flights = read_offline_table(FLIGHTS_TABLE, columns=["flight_id"],
                                 filters=(ds.field("event_timestamp") > utc(as_of).to_pydatetime()) if as_of else None)
    return int(flights["flight_id"].nunique()) if not flights.empty else 0


def hold_reason(trigger: dict, cfg: settings.Settings | None = None,
                measured: tuple[int, str | None, str | None] | None = None) -> str | None:
    """Why a drift-triggered run must not train yet, or None.

    Retraining on the champion's own data learns nothing (the demo's first drift
    retraining trained on exactly v1's batch and "won" by +0.0017 on February): a drift
    run needs `retrain_min_new_labels` labelled flights newer than the champion's
    `data_as_of`. Monitoring's retry lets a later drifted window try again once the
    labels have arrived. `measured`: `new_labels_since_champion`'s answer, when the caller has it.
    """
    from training import events

    cfg = cfg or settings.get()
    if trigger["reason"] != events.DRIFT:
        return None
    count, as_of, version = measured or new_labels_since_champion(cfg)
    if version is None or count >= cfg.retrain_min_new_labels:
        log.info("%d labelled flights newer than the champion v%s's data (as of %s): enough to retrain",
                 count, version, as_of)
        return None
    return (f"retraining held: {count} labelled flights departed after champion v{version}'s data_as_of {as_of}, "
            f"need {cfg.retrain_min_new_labels} (MLOPS_RETRAIN_MIN_NEW_LABELS); the run waits for them up to "
            f"MLOPS_RETRAIN_LABEL_WAIT_HOURS, then monitoring's next drifted window tries again")


def hold_and_alert(trigger: dict, run_id: str) -> str | None:
    """`hold_reason`, and when the run holds, the alert that tells a person why."""
    held = hold_reason(trigger)
    if held:
        import alerts

        alerts.send(alerts.Alert(kind="retraining_held", title="drift retraining held", text=held,
                                 fields={"run_id": run_id}))
    return held


def build_training_set(key: str, trigger: dict, as_of: str | None = None) -> dict:
    """Build the run's training set once; a re-run of the same key returns the first summary."""
    import pandas as pd

    from training import dataset

    store = storage.get()
    summary_url = _dataset_url(key, "summary.json")
    if store.exists(summary_url):
        return store.read_json(summary_url)
    cfg = settings.get()
    weeks = dataset.window_weeks(trigger["reason"], cfg)
    flights, as_of_ts = dataset.labelled_flights(weeks, cfg.training_max_rows,
                                                 pd.Timestamp(as_of) if as_of else None)
    if flights.empty:
        raise dataset.NoTrainingData(f"no labelled flights known at {as_of_ts} in a {weeks}-week window")
    frame = dataset.with_features(flights)
    # A drift run is judged on the drifted period: the flights after the champion's data.
    new_since = champion_data_as_of(cfg)[1] if trigger["reason"] == events.DRIFT else None
    frame["part"] = splitting.time_split(frame, new_since=pd.Timestamp(new_since) if new_since else None)
    store.write_parquet(_dataset_url(key, "dataset.parquet"), frame)
    counts = frame["part"].value_counts()
    summary = {
        "run_key": key,
        "url": _dataset_url(key, "dataset.parquet"),
        "as_of": as_of_ts.isoformat(),
        "window_weeks": weeks,
        "judged_since": new_since,  # drift: the champion's data_as_of; the split's boundaries lie after it
        "max_rows": cfg.training_max_rows,
        # Every batch whose flights are in the set (a drift-started run has no feature_table event),
        # landing and feed batches: `make lineage` traces each back to its files.
        "batch_ids": dataset.batch_ids(flights),
        "rows": {p: int(counts.get(p, 0)) for p in (*splitting.PARTS, splitting.DROPPED)},
        "late_rate": {p: float(frame.loc[frame["part"] == p, "is_late"].mean()) for p in splitting.PARTS},
        "ranges": splitting.ranges(frame, frame["part"]),
    }
    store.write_json(summary_url, summary)
    log.info("training set %s: %s", key, json.dumps(summary))
    return summary


def _parts(dataset_summary: dict) -> dict:
    """{part: (model frame, labels, rows)} of the stored training set."""
    from features.compute import LABEL, model_frame

    frame = storage.get().read_parquet(dataset_summary["url"])
    out = {}
    for part in splitting.PARTS:
        rows = frame[frame["part"] == part].reset_index(drop=True)
        out[part] = (model_frame(rows), rows[LABEL].to_numpy(dtype="int64"), rows)
    return out


# -- candidates -------------------------------------------------------------------------------
def _lineage_tags(trigger: dict) -> dict[str, str]:
    from features.names import FEATURE_SERVICE

    return {
        Tag.FEATURE_SERVICE: FEATURE_SERVICE,
        Tag.TRIGGER_REASON: trigger["reason"],
        Tag.FEATURE_TABLE_EVENTS: json.dumps([e["id"] for e in trigger["feature_table_events"]]),
        "feature_table_batches": json.dumps([e["batch_id"] for e in trigger["feature_table_events"]]),
        Tag.DRIFT_REPORT_EVENTS: json.dumps([e["id"] for e in trigger["drift_report_events"]]),
    }


def _reference(rows, features, labels, probabilities):
    """Monitoring's reference: a seeded sample of training rows with the model's output."""
    from features.compute import LABEL
    from training.tracking import REFERENCE_PREDICTION, REFERENCE_ROWS

    ref = features.copy()
    ref[LABEL] = labels
    ref[REFERENCE_PREDICTION] = probabilities
    ref.insert(0, "event_timestamp", rows["event_timestamp"].to_numpy())
    return ref.sample(n=min(REFERENCE_ROWS, len(ref)), random_state=0).sort_values("event_timestamp")


def train_candidate(family: str, dataset_summary: dict, trigger: dict) -> dict:
    """Fit one family on the train part, pick its threshold on valid, score valid and test, log it."""
    from threadpoolctl import threadpool_limits

    from training import tracking

    cfg = settings.get()
    mlflow_client = tracking.client(cfg)
    exp_id = tracking.experiment_id(mlflow_client, cfg)
    done = tracking.finished_run(mlflow_client, exp_id, dataset_summary["run_key"], family)
    if done is not None:
        log.info("candidate %s is already logged as run %s", family, done.info.run_id)
        return tracking.candidate_summary(done)
    # One thread: candidates train side by side (one task each), and OpenMP threads
    # fighting over busy cores spin instead of working.
    with threadpool_limits(limits=1):
        return _fit_and_log(family, dataset_summary, trigger, mlflow_client, exp_id)


def _fit_and_log(family: str, dataset_summary: dict, trigger: dict, mlflow_client, exp_id: str) -> dict:
    import time

    from training import candidates, metrics as quality, tracking

    key = dataset_summary["run_key"]
    parts = _parts(dataset_summary)
    (x_train, y_train, train_rows), (x_valid, y_valid, _), (x_test, y_test, _) = (
        parts[p] for p in splitting.PARTS)
    started = time.perf_counter()
    model = candidates.build(family).fit(x_train, y_train)
    fit_seconds = time.perf_counter() - started
    p_train, p_valid, p_test = (model.predict_proba(x)[:, 1] for x in (x_train, x_valid, x_test))
    threshold = quality.decision_threshold(y_valid, p_valid)
    reference = _reference(train_rows, x_train, y_train, p_train)
    # Monitoring's per-column drift thresholds, from windows of its span inside this training part.
    import numpy as np

    from features.compute import LABEL
    from monitoring.calibration import calibrate

    thresholds = calibrate(x_train.assign(event_timestamp=train_rows["event_timestamp"].to_numpy(),
                                          **{LABEL: np.asarray(y_train)}),
                           reference, settings.get().monitor_window_days)
    metrics = {
        **quality.prefixed("valid", quality.scores(y_valid, p_valid, threshold)),
        **quality.prefixed("test", quality.scores(y_test, p_test, threshold)),
        "fit_seconds": fit_seconds,
    }
    summary = tracking.log_candidate(
        mlflow_client, exp_id,
        run_name=f"{family}-{key}"[:250],
        tags={**_lineage_tags(trigger), **dataset_summary["ranges"], "training_run_key": key,
              "candidate": family, Tag.DECISION_THRESHOLD: str(threshold), Tag.DATA_AS_OF: dataset_summary["as_of"]},
        params={"family": family, **candidates.PARAMS[family], "window_weeks": dataset_summary["window_weeks"],
                "max_rows": dataset_summary["max_rows"], "as_of": dataset_summary["as_of"],
                **{f"rows_{p}": n for p, n in dataset_summary["rows"].items()}},
        metrics=metrics,
        model=model,
        input_example=x_valid.head(5),
        reference=reference,
        thresholds=thresholds,
    )
    log.info("candidate %s: run %s, threshold %.3f, fit %.1f s, test %s", family, summary["run_id"],
             threshold, fit_seconds, summary["test"])
    return summary


# -- the gate ---------------------------------------------------------------------------------
def champion_scores(mlflow_client, name: str, dataset_summary: dict, probabilities_out: dict | None = None
                    ) -> tuple[str | None, dict | None]:
    """(version, test-part metrics at its own threshold) of the `production` version, or (None, None).
    `probabilities_out`, when given, receives the champion's test probabilities under "champion"."""
    from threadpoolctl import threadpool_limits

    from training import metrics, registry

    current = registry.champion(mlflow_client, name)
    if current is None:
        return None, None
    trained_until = current.tags.get(Tag.range_end(splitting.TRAIN), "")
    if trained_until >= dataset_summary["ranges"][Tag.range_start(splitting.TEST)]:
        # Possible when the champion's window was shorter: the comparison then favours it.
        log.warning("champion v%s was trained on flights up to %s, inside this holdout (from %s)",
                    current.version, trained_until, dataset_summary["ranges"][Tag.range_start(splitting.TEST)])
    model = registry.load_version(name, current.version)
    x_test, y_test, _ = _parts(dataset_summary)[splitting.TEST]
    threshold = float(current.tags.get(Tag.DECISION_THRESHOLD, 0.5))
    with threadpool_limits(limits=1):
        probabilities = model.predict_proba(x_test)[:, 1]
    if probabilities_out is not None:
        probabilities_out["champion"] = probabilities
    return str(current.version), metrics.scores(y_test, probabilities, threshold)


def challenger_interval(challenger: dict, champion_probabilities, dataset_summary: dict, metric: str):
    """(paired interval of the challenger's improvement, the holdout in words), or (None, None)."""
    import mlflow.sklearn
    from threadpoolctl import threadpool_limits

    if champion_probabilities is None:
        return None, None
    x_test, y_test, rows = _parts(dataset_summary)[splitting.TEST]
    try:
        model = mlflow.sklearn.load_model(challenger["model_uri"])
        with threadpool_limits(limits=1):
            probabilities = model.predict_proba(x_test)[:, 1]
    except Exception as exc:  # the decision stands without it; say why it is missing
        log.warning("no interval for the gate: the challenger's model could not be scored again: %s", exc)
        return None, None
    times = rows["event_timestamp"]
    days = (times.max() - times.min()).total_seconds() / 86400
    holdout = (f"{len(y_test)} flights departing {times.min():%Y-%m-%d %H:%M}..{times.max():%Y-%m-%d %H:%M} "
               f"({days:.1f} days)")
    return gate_rules.paired_interval(y_test, probabilities, champion_probabilities, metric), holdout


def gate(candidate_summaries: list[dict], dataset_summary: dict, trigger: dict) -> dict:
    """Challenger vs champion on this run's newest holdout; the decision with every number."""
    from training import tracking

    cfg = settings.get()
    mlflow_client = tracking.client(cfg)
    challenger = gate_rules.best_candidate(candidate_summaries, cfg.gate_metric)
    outputs: dict = {}
    champion_version, champion_metrics = champion_scores(mlflow_client, cfg.model_name, dataset_summary, outputs)
    interval, holdout = challenger_interval(challenger, outputs.get("champion"), dataset_summary, cfg.gate_metric)
    decision = gate_rules.decide(
        challenger["test"], champion_metrics, cfg.gate_metric, cfg.gate_margin,
        gate_rules.drift_concerns_champion(trigger["drift_report_events"], champion_version),
        interval=interval, holdout=holdout,
    )
    decision.update(
        model_name=cfg.model_name,
        challenger=challenger,
        champion_version=champion_version,
        champion_metrics=champion_metrics,
        candidates=[{"family": c["family"], "run_id": c["run_id"], "valid": c["valid"], "test": c["test"]}
                    for c in candidate_summaries],
        explanation=gate_rules.explain(decision),
    )
    tracking.tag_run(mlflow_client, challenger["run_id"], {
        "challenger": "true", "gate_decision": "register" if decision["register"] else "hold",
        "gate_rule": decision["rule"], "gate_explanation": decision["explanation"],
        "champion_version": champion_version or "", "champion_metrics": champion_metrics or {},
    })
    log.info("gate: %s (candidates: %s)", decision["explanation"],
             {c["family"]: round(c["valid"][cfg.gate_metric], 4) for c in candidate_summaries})
    return decision


# -- registration -----------------------------------------------------------------------------
def _version_tags(decision: dict, dataset_summary: dict, trigger: dict) -> dict[str, str]:
    challenger = decision["challenger"]
    tags = {
        **_lineage_tags(trigger),
        **dataset_summary["ranges"],
        Tag.DECISION_THRESHOLD: str(challenger["decision_threshold"]),
        Tag.DATA_AS_OF: dataset_summary["as_of"],
        "window_weeks": str(dataset_summary["window_weeks"]),
        Tag.TRAINING_BATCHES: model_registry.training_batches_tag(dataset_summary["batch_ids"])[0],
        "training_run_key": dataset_summary["run_key"],
        "candidate": challenger["family"],
        "gate_rule": decision["rule"],
        "champion_version": decision["champion_version"] or "",
    }
    tags.update({f"{Tag.TEST_METRIC_PREFIX}{k}": f"{v:.6f}" for k, v in challenger["test"].items()})
    tags.update({f"champion_test_{k}": f"{v:.6f}" for k, v in (decision["champion_metrics"] or {}).items()})
    return tags


def _description(decision: dict, dataset_summary: dict, trigger: dict) -> str:
    r, rows = dataset_summary["ranges"], dataset_summary["rows"]
    champ = (f"champion v{decision['champion_version']} test metrics {json.dumps(decision['champion_metrics'])}"
             if decision["champion_version"] else "no champion")
    return (
        f"{decision['challenger']['family']} trained on {rows['train']} flights departing {r['train_start']} to "
        f"{r['train_end']}, threshold chosen on {rows['valid']} flights from {r['valid_start']} to {r['valid_end']}, "
        f"tested on {rows['test']} flights from {r['test_start']} to {r['test_end']} (data as of "
        f"{dataset_summary['as_of']}). Trigger: {trigger['reason']}; feature_table events "
        f"{[e['id'] for e in trigger['feature_table_events']]}, drift_report events "
        f"{[e['id'] for e in trigger['drift_report_events']]}. Test metrics "
        f"{json.dumps(decision['challenger']['test'])}; {champ}. Gate: {decision['explanation']}."
    )


def register(decision: dict, dataset_summary: dict, trigger: dict) -> dict:
    """Register the challenger (once per run), alias it `challenger`; the registered_model extra."""
    from training import registry, tracking

    if not decision["register"]:
        raise ValueError(f"the gate did not approve this challenger: {decision['explanation']}")
    mlflow_client = tracking.client()
    challenger = decision["challenger"]
    if model_registry.training_batches_tag(dataset_summary["batch_ids"])[1]:  # too long for the tag
        mlflow_client.log_dict(challenger["run_id"], dataset_summary["batch_ids"], model_registry.BATCHES_ARTIFACT)
    mv = registry.register_once(
        mlflow_client, decision["model_name"], challenger["model_uri"], challenger["model_id"],
        challenger["run_id"], _version_tags(decision, dataset_summary, trigger),
        _description(decision, dataset_summary, trigger),
    )
    return datasets.check_extra(datasets.registered_model, datasets.registered_model_extra(
        model_name=decision["model_name"],
        version=str(mv.version),
        run_id=challenger["run_id"],
        metrics=challenger["test"],
        champion_version=decision["champion_version"],
        champion_metrics=decision["champion_metrics"],
        trigger_reason=trigger["reason"],
        gate_rule=decision["rule"],
        **events.lineage_ids(trigger),
    ))

