"""The monitoring DAGs' task bodies: report a window, judge it, describe the event, record baselines.

Plain functions over plain dicts (the XCom values), so tests run the whole
sequence without a scheduler. Each step is safe to re-run: the report of a
window overwrites itself, and a window already judged replays its recorded
decision instead of being judged again.
"""

from __future__ import annotations

import logging
import posixpath
from datetime import datetime, timezone

import datasets
import settings
import storage
from monitoring import inference, policy, state
from training.metrics import PRIMARY

log = logging.getLogger(__name__)


def _window(rows, urls: list[str], plan: dict | None) -> dict:
    """The window's summary: its request times, its departures span and what carries over."""
    times = inference.request_times(rows)
    known = bool(times.notna().any())
    plan = plan or {}
    return {
        "id": inference.window_id(urls, times),
        "start": times.min().isoformat() if known else None,
        "end": times.max().isoformat() if known else None,
        "departures_from": plan.get("start"),
        "departures_to": plan.get("end"),
        "rows": int(len(rows)),
        "files": sorted(posixpath.basename(u) for u in urls),
        "carried": {posixpath.basename(u): c for u, c in (plan.get("carried") or {}).items()},
        "pending_rows": plan.get("pending"),
    }


def window_rows(traffic: dict):
    """The served rows the sensor's window judges: each file's rows departing before the window's end and
    not judged by an earlier window. Without a window plan (a manual run): the files whole."""
    plan = traffic.get("window")
    if not plan:
        return inference.read_window(list(traffic["files"]))
    import pandas as pd

    store = storage.get()
    frames = []
    for url in traffic["files"]:
        rows = store.read_parquet(url)
        frames.append(rows[inference.departure_cut(rows, plan["end"], plan["since"].get(url))])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def report_window(traffic: dict, cfg: settings.Settings | None = None, last_attempt: bool = True) -> dict:
    """The Evidently report of the window the sensor found; returns its summary.

    A window that cannot be reported must not stop monitoring: the continuous
    DAG would fail on the same files forever. So a version without a training
    reference, or a failure on the task's last attempt, records the window as
    consumed (with the reason) before the task fails, and the next run waits for
    new traffic.
    """
    from monitoring import report

    cfg = cfg or settings.get()
    version, urls = str(traffic["version"]), list(traffic["files"])
    plan = traffic.get("window")
    window = {"id": inference.window_id(urls), "files": sorted(posixpath.basename(u) for u in urls),
              "carried": {posixpath.basename(u): c for u, c in ((plan or {}).get("carried") or {}).items()},
              "departures_to": (plan or {}).get("end")}
    try:
        rows = inference.attach_labels(inference.since_baseline(window_rows(traffic), cfg.model_name, version))
        window = _window(rows, urls, plan)
        log.info("window %s: %d rows of %s v%s departing %s..%s in %d file(s), %d labelled; %s rows carry over",
                 window["id"], len(rows), cfg.model_name, version, window["departures_from"],
                 window["departures_to"], len(urls), int(rows["is_late"].notna().sum()), window["pending_rows"])
        reference = report.load_reference(cfg.model_name, version, cfg.mlflow_tracking_uri)
        summary = report.build(rows, reference, model_name=cfg.model_name, window=window, cfg=cfg,
                               min_labelled_rows=policy.MIN_LABELLED_ROWS)
        summary["earlier_quality"] = earlier_quality(cfg, version, reference)
        return summary
    except report.ReferenceMissing as exc:
        _consume_unjudged(cfg.model_name, version, window, "no_reference", str(exc))
        raise
    except Exception as exc:
        if last_attempt:
            _consume_unjudged(cfg.model_name, version, window, "report_failed", repr(exc))
        raise


def earlier_quality(cfg: settings.Settings, version: str, reference) -> dict | None:
    """The quality of the version's previous window again, when more of its flights' labels have arrived.

    A window closes hours before its last flights land, so it is judged on most, not all, of its
    labels (and a late batch of outcomes can fill it later still). The next window judges it again.
    """
    from monitoring import report

    entry = state.last_judged(state.load(cfg.model_name), version)
    if not entry or not entry.get("departures_to") or not entry.get("files"):
        return None
    before = entry.get("rejudged_labelled_rows", entry.get("labelled_rows"))
    if before is None or before >= entry["rows"]:
        return None
    store = storage.get()
    frames = []
    for name in entry["files"]:
        url = f"{inference.version_url(version, store)}/{name}"
        if store.exists(url):
            rows = store.read_parquet(url)
            dep = inference.request_departures(rows)
            frames.append(rows[(dep >= entry["departures_from"]) & (dep < entry["departures_to"])])
    if not frames:
        return None
    import pandas as pd

    rows = inference.attach_labels(inference.since_baseline(pd.concat(frames, ignore_index=True),
                                                            cfg.model_name, version))
    figures, _ = report.quality(rows, reference, cfg.gate_metric, policy.MIN_LABELLED_ROWS, cfg.drift_sample_cap,
                                evidently=False)
    if figures["labelled_rows"] <= before:
        return None
    log.info("window %s judged again: %d of its %d flights labelled now (%d when it was judged)",
             entry["window"], figures["labelled_rows"], len(rows), before)
    return {"window": entry["window"], "rows": int(len(rows)), **figures,
            "calibration_gap_limit": report.calibration_gap_limit(reference)}


def _consume_unjudged(model_name: str, version: str, window: dict, reason: str, why: str) -> None:
    log.error("window %s of %s v%s is not judged (%s): %s", window["id"], model_name, version, reason, why)
    current = state.load(model_name)
    decision = policy.Decision(False, reason, drifted=None)
    state.save(state.record_window(current, version, window["id"], window["files"], decision, {"error": why},
                                   datetime.now(timezone.utc), carried=window.get("carried"),
                                   end=window.get("departures_to")))


def observation(summary: dict) -> policy.Observation:
    q = summary.get("quality") or {}
    return policy.Observation(
        rows=summary["rows"],
        drift_share=summary["drift_share"],
        drift_detected=bool(summary["drift_detected"]),
        missing_columns=tuple(summary.get("missing_columns") or ()),
        quality_metric=q.get("metric") or PRIMARY,
        quality=q.get("value"),
        reference_quality=q.get("reference"),
        labelled_rows=q.get("labelled_rows") or 0,
        figures=q.get("figures"),
        reference_figures=q.get("reference_figures"),
        calibration_gap_limit=q.get("calibration_gap_limit"),
    )


def judge_window(summary: dict, now: datetime | None = None, cfg: settings.Settings | None = None) -> dict:
    """Judge the window with the policy, log the decision and its numbers, and remember it."""
    cfg = cfg or settings.get()
    now = now or datetime.now(timezone.utc)
    version, window = str(summary["model_version"]), summary["window"]
    current = state.load(cfg.model_name)
    recorded = state.recorded_window(current, version, window["id"])
    if recorded is not None:
        log.info("window %s was judged at %s: replaying its decision %s", window["id"], recorded["at"],
                 recorded["decision"])
        return recorded["decision"]
    limits = policy.Thresholds.from_settings(cfg)
    obs = observation(summary)
    past = state.history(current, version)
    earlier = summary.get("earlier_quality")
    decision = policy.decide(obs, past, limits, now, earlier=(
        (earlier["window"], observation({"rows": earlier["rows"], "drift_share": 0.0, "drift_detected": False,
                                         "quality": earlier})) if earlier else None))
    log.info("%s v%s window %s: %s", cfg.model_name, version, window["id"], policy.explain(obs, decision, limits))
    log.info("failed tests %s; drifted columns %s; prediction drift score %s; report %s",
             summary.get("failed_tests"), summary["drifted_columns"], summary.get("prediction_drift"),
             summary["report_path"])
    if decision.data_quality_incident:
        import alerts

        alerts.send(alerts.Alert(
            kind="data_quality_incident",
            title=f"{cfg.model_name} v{version}: features missing from served rows",
            text=f"{', '.join(decision.data_quality_incident)} missing in window {window['id']} "
                 f"(more than the reference's share plus {cfg.missing_share_margin}); not drift, no retraining",
            fields={"model_version": version, "window": window["id"], "report": summary["report_path"]},
        ))
    if decision.reason == policy.ATTEMPTS_EXHAUSTED and not state.exhaustion_alerted(current, version):
        import alerts

        alerts.send(alerts.Alert(
            kind="retraining_exhausted",
            title=f"{cfg.model_name} v{version} still serves a drifted window after {past.attempts_in_episode} "
                  f"retrainings",
            text="no retrained version replaced it (gate held, validation failed or the deployment rolled "
                 "back): monitoring stops retrying this episode until a clean window; a person must look",
            fields={"model_version": version, "window": window["id"], "report": summary["report_path"]},
        ))
    numbers = {k: summary.get(k) for k in ("rows", "drift_share", "drift_detected", "drifted_columns",
                                           "missing_columns", "failed_tests", "report_path")}
    numbers.update(departures_from=window.get("departures_from"), departures_to=window.get("departures_to"),
                   files=window["files"], labelled_rows=(summary.get("quality") or {}).get("labelled_rows"))
    if earlier:
        current = state.rejudged(current, version, earlier["window"], earlier["labelled_rows"])
    state.save(state.record_window(current, version, window["id"], window["files"], decision, numbers, now,
                                   carried=window.get("carried"), end=window.get("departures_to")))
    return decision.as_dict()


def drift_report_extra(summary: dict, decision: dict) -> datasets.DriftReportExtra:
    """The `drift_report` event extra of a window the policy said to retrain on, checked against its type."""
    reason = "+".join(k for k, on in (("drift", decision.get("data_drift")),
                                      ("quality", decision.get("quality_dropped"))) if on)
    return datasets.check_extra(datasets.drift_report, datasets.drift_report_extra(
        report_path=summary["report_path"], json_path=summary["json_path"], drift_share=summary["drift_share"],
        drifted_columns=summary["drifted_columns"], prediction_drift=summary.get("prediction_drift"),
        failed_tests=summary["failed_tests"], missing_columns=summary["missing_columns"],
        quality=summary["quality"], model_name=summary["model_name"], model_version=summary["model_version"],
        window=summary["window"], reason=reason,
    ))


def record_baselines(events: list[dict], cfg: settings.Settings | None = None) -> list[dict]:
    """A fresh baseline for every deployed version in the `deployed_model` events (oldest first)."""
    cfg = cfg or settings.get()
    out = []
    for event in events:
        extra = event.get("extra") or {}
        if extra.get("version") is None:
            log.warning("deployed_model event without a version, ignored: %s", extra)
            continue
        baseline = state.record_baseline(
            extra.get("model_name") or cfg.model_name, str(extra["version"]), event["timestamp"],
            previous_version=extra.get("previous_version"), source_run_id=event.get("source_run_id"),
        )
        log.info("baseline of %s v%s starts at %s", baseline["model_name"], baseline["version"],
                 baseline["deployed_at"])
        out.append(baseline)
    return out
