"""Quality on delayed labels: a window judged before its last flights landed is judged again once they have."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest
from monitoring_helpers import reference_sample, register_version, write_log

from monitoring import inference, sensor, state, tasks

pytestmark = pytest.mark.integration


def _next_window(cfg) -> dict:
    found = sensor.check_traffic(cfg.model_name, cfg.mlflow_tracking_uri, {}, cfg.monitor_window_days,
                                 cfg.monitor_min_rows)
    assert found["window"] is not None, found
    return found


def test_labels_that_arrive_after_a_window_was_judged_are_judged_with_the_next_window(
        monitor_env, mlflow_uri, served, monkeypatch):
    import settings

    cfg = settings.get()  # with the MLflow server's URL (mlflow_uri)
    name = cfg.model_name
    version = register_version(name, reference_sample(served["reference"]),
                               {"test_roc_auc": 0.70, "test_log_loss": 0.56, "test_brier": 0.19})
    rows = served["same_season"].sort_values("event_timestamp").reset_index(drop=True).head(2200).copy()
    # The model ranked the first window's second half upside down: quality that only shows once those
    # flights' labels are in.
    late = rows.index[500:1000]
    rows.loc[late, "probability"] = 1 - rows.loc[late, "probability"]
    rows.loc[late, "prediction"] = (rows.loc[late, "probability"] >= 0.3).astype("int64")
    write_log(rows.head(1200), name, version, per_file=400)

    cut = rows.loc[500, "event_timestamp"]
    real = inference.attach_labels

    def labels_landed_before_the_cut(frame: pd.DataFrame) -> pd.DataFrame:
        out = real(frame)
        out.loc[pd.to_datetime(out["sched_dep_ts"], utc=True) >= cut, "is_late"] = float("nan")
        return out

    monkeypatch.setattr(inference, "attach_labels", labels_landed_before_the_cut)
    first = tasks.report_window(_next_window(cfg), cfg)
    assert first["quality"]["labelled_rows"] == 500 and first["earlier_quality"] is None
    decision = tasks.judge_window(first, now=datetime.now(timezone.utc), cfg=cfg)
    assert decision["retrain"] is False, decision  # the first 500 flights were well predicted

    monkeypatch.setattr(inference, "attach_labels", real)  # every outcome has arrived since
    write_log(rows.iloc[1200:], name, version, per_file=500)
    second = tasks.report_window(_next_window(cfg), cfg)
    earlier = second["earlier_quality"]
    assert earlier["window"] == first["window"]["id"] and earlier["labelled_rows"] == 1000
    assert earlier["value"] < first["quality"]["value"] - 0.05
    decision = tasks.judge_window(second, now=datetime.now(timezone.utc), cfg=cfg)
    assert decision["retrain"] is True and decision["quality_dropped"] is True
    assert any(r.startswith(f"window {first['window']['id']} judged again on 1000 labelled flights: roc_auc")
               for r in decision["quality_reasons"]), decision["quality_reasons"]
    recorded = state.version_state(state.load(name), version)["windows"]
    assert recorded[0]["rejudged_labelled_rows"] == 1000  # judged again once, not at every later window
