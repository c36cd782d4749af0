"""The whole loop on the real stack, as `make demo` runs it, in both profiles.

Data is dropped, the first model is trained and deployed, the first days of a
drifted month are replayed on the replay clock (feeds, requests at their time,
outcomes as flights arrive), and the drift report must start a retraining that
ends with a newer version in production. The served rows' features must be fresh
and their labels must have reached them.
"""

from __future__ import annotations

import re

import httpx
import pytest

from ops import demo
from ops.airflow_api import AirflowClient

pytestmark = pytest.mark.e2e

CHAIN = ["feature_table", "registered_model", "deployed_model", "drift_report", "registered_model", "deployed_model"]


def test_drift_triggered_redeployment(local_stack, capsys):
    cfg = local_stack
    # Every flight of three days, with 2-day monitoring windows (tests/conftest.py profile_env): the
    # loop's wiring; the demo's 7-day window is make demo's.
    assert demo.main(["--months", "2", "--replay-month", "2013-07", "--days", "3", "--speed", "0",
                      "--share", "1"]) == 0
    out = capsys.readouterr().out
    assert "drift_report" in out and "Served version" in out
    served_rows = re.search(r"Served rows +(\d+) answered, ([\d.]+)% with fresh features .*; (\d+) of the (\d+) logged "
                            r"have their label", out)
    assert served_rows, out
    answered, fresh, labelled, logged = served_rows.groups()
    assert int(answered) > 2000 and float(fresh) >= 99.0
    assert int(logged) == int(answered) and int(labelled) >= 0.95 * int(logged)

    client = AirflowClient()
    events = sorted(
        ((e["timestamp"], name, e) for name in set(CHAIN) for e in client.asset_events(name)),
        key=lambda item: item[0],
    )
    sequence = [name for _, name, _ in events]
    assert sequence == CHAIN

    registered = [e for _, name, e in events if name == "registered_model"]
    deployed = [e for _, name, e in events if name == "deployed_model"]
    drift = next(e for _, name, e in events if name == "drift_report")
    assert registered[1]["extra"]["trigger_reason"].startswith("drift")
    assert int(deployed[1]["extra"]["version"]) > int(deployed[0]["extra"]["version"])
    assert str(deployed[1]["extra"]["previous_version"]) == str(deployed[0]["extra"]["version"])
    assert str(drift["extra"]["model_version"]) == str(deployed[0]["extra"]["version"])
    # v1 was trained on two months: the report judged each column at its calibrated threshold.
    import storage

    summary = storage.get().read_json(drift["extra"]["json_path"])["summary"]
    assert summary["calibrated"] is True and {"temp", "dewp"} <= set(summary["column_thresholds"])
    assert any(n.startswith("Share of Drifted Columns") for n in drift["extra"]["failed_tests"])

    served = httpx.get(f"{cfg.model_server_url}/version", timeout=10).json()
    assert str(served["version"]) == str(deployed[1]["extra"]["version"])
