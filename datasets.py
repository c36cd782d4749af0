"""Every Airflow Asset of the chain, defined once.

The four DAGs know each other only through these assets. Names are fixed:
other parts and outside tools look them up by name. URIs are built from the
configured storage (`file://` in the embedded stack, `s3://` in compose).
Each asset event carries its lineage in `extra`; the keys are listed here.
"""

from __future__ import annotations

from airflow.sdk import Asset

import settings

_root = settings.get().storage_url

# New features in the Feast offline store, materialized online.
# extra: batch_id, content_hash, files[{name, kind, sha256, rows_in, rows_accepted,
#        rows_quarantined, processed_as}], rows_in, rows_accepted, rows_quarantined,
#        event_time_min, event_time_max.
feature_table = Asset(name="feature_table", uri=f"{_root}/features/feature_table", group="features")

# A model version in the MLflow registry that passed the champion/challenger gate.
# extra: model_name, version, run_id, metrics, champion_version, champion_metrics,
#        trigger_reason, gate_rule, feature_table_events[{id, batch_id}], drift_report_events.
registered_model = Asset(name="registered_model", uri=f"{_root}/models/registered_model", group="models")

# The model version the model server answers with (MLflow alias `production`).
# extra: model_name, version, previous_version, validation, smoke.
deployed_model = Asset(name="deployed_model", uri=f"{_root}/models/deployed_model", group="models")

# A drift report on served traffic whose policy said "retrain".
# extra: report_path, json_path, drift_share, drifted_columns, prediction_drift, quality,
#        model_name, model_version, window{id, start, end, rows}, reason.
drift_report = Asset(name="drift_report", uri=f"{_root}/reports/drift_report", group="monitoring")

ALL = (feature_table, registered_model, deployed_model, drift_report)
