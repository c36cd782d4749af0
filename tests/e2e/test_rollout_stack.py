"""The staged rollout on the real embedded stack (issue #14): live traffic, shadow, canary, a person's
approval through the REST API, promotion; and a version that passes offline validation but does worse
on live traffic (trained on a skewed sample) rolled back from its shadow, with the alert delivered to a
real webhook receiver; and a good version a person rejects through the REST API, removed from its
canary with production left alone and an alert naming who rejected.

Only the embedded profile: the rollout's logic is profile-independent, and the loop test
(test_loop.py) covers the other profiles. The versions are logged by the test (tests/sample_model.py,
the models tests/serving/test_rollout_dag.py uses) on the stack's own features, and
announced as `registered_model` events through the REST API; the training DAG is paused so that only
these versions are in play. The first one goes straight to all traffic (a first deployment is direct
and asks nobody); the next ones meet the traffic a thread sends to the model server.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from ops.airflow_api import AirflowClient
from support import Traffic

pytestmark = pytest.mark.e2e

APPROVAL_MINUTES = 10
# As tests/serving/test_rollout_dag.py's ROLLOUT_ENV, and for the same reasons: the traffic asks flights
# of the last two weeks as of one hour (the online store holds only the latest values), so two good models'
# scores differ more than on real traffic, and a few hundred labelled rows cannot tell them apart; the
# judge's defaults are tested in tests/serving/test_rollout_judge.py. Here the rollout's wiring is.
ROLLOUT_ENV = {
    "MLOPS_ROLLOUT": "staged", "MLOPS_PROMOTION_APPROVAL": "required",
    "MLOPS_PROMOTION_APPROVAL_MINUTES": str(APPROVAL_MINUTES),
    # The default row counts: at the thread's ~40 requests a second each stage waits over 10 s. A sensor
    # whose trigger fires within ~5 s of deferring can be failed by Airflow 3.3.2's scheduler: the exit of
    # the deferring process is reported that late, after the resumed try was queued under the same key
    # ("finished with state success, but the task instance's state attribute is queued"; seen with 150).
    "MLOPS_SHADOW_MIN_ROWS": "500", "MLOPS_SHADOW_MAX_MINUTES": "3",
    "MLOPS_CANARY_MIN_ROWS": "200", "MLOPS_CANARY_MAX_MINUTES": "3", "MLOPS_CANARY_SHARE": "0.5",
    "MLOPS_ROLLOUT_POLL_SECONDS": "1", "MLOPS_INFERENCE_FLUSH_SECONDS": "0.5", "MLOPS_INFERENCE_FLUSH_ROWS": "20",
    "MLOPS_ROLLOUT_MIN_AGREEMENT": "0.8", "MLOPS_ROLLOUT_MAX_SCORE_PSI": "1.0", "MLOPS_ROLLOUT_MIN_LABELLED": "100000",
    "MLOPS_SERVING_LATENCY_RATIO": "3",
}
AS_OF = "2013-03-01T05:00:00Z"  # just after the last weather hour of Jan-Feb: fresh features for every request


@pytest.fixture(scope="module")
def receiver():
    from test_alerts import Receiver

    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def rollout_stack(tmp_path_factory, samples_dir, receiver, pytestconfig):
    """The embedded stack with a staged rollout that needs approval, alerts going to `receiver`."""
    from ops import stack
    from support import reload_settings

    # tests/conftest.py's profile_env (other folders have a `conftest` module of their own)
    root = str(Path(__file__).resolve().parents[1] / "conftest.py")
    profile_env = next(p for p in pytestconfig.pluginmanager.get_plugins()
                       if getattr(p, "__file__", None) == root).profile_env
    home = tmp_path_factory.mktemp("stack-rollout")
    mp = pytest.MonkeyPatch()
    for key, value in {**profile_env("embedded", home), **ROLLOUT_ENV,
                       "MLOPS_ALERT_WEBHOOK_URL": receiver.url}.items():
        mp.setenv(key, value)
    cfg = reload_settings()
    shutil.copytree(samples_dir, home / "samples", dirs_exist_ok=True)
    try:
        stack.up(cfg, timeout=300, later=frozenset({"evidently"}))  # the dashboard's UI plays no part here
        yield cfg
    finally:
        stack.down(cfg)
        mp.undo()
        reload_settings()


def wait_for(check, timeout: float, what: str, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except httpx.TransportError:  # a busy api-server is not an answer
            value = None
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Api:
    """The REST calls of this test, authenticated as the stack's admin (ops.airflow_api)."""

    def __init__(self):
        self.client = AirflowClient()

    def patch(self, path: str, body: dict) -> httpx.Response:
        return self.client._http.patch(path, json=body, headers=self.client._auth())

    def run_path(self, run_id: str) -> str:
        return f"/api/v2/dags/serving/dagRuns/{quote(run_id, safe='')}"

    def run_ids(self) -> set[str]:
        return {r["dag_run_id"] for r in self.client.dag_runs("serving", limit=50)}

    def announce(self, cfg, version: str) -> str:
        """Emit `registered_model` for `version` through the REST API; returns the serving run it starts."""
        import datasets

        before = self.run_ids()
        extra = datasets.registered_model_extra(
            model_name=cfg.model_name, version=version, run_id="", metrics={}, champion_version=None,
            champion_metrics=None, trigger_reason="manual", gate_rule="registered by tests/e2e", feature_table_events=[],
            drift_report_events=[])
        asset_id = self.client.asset("registered_model")["id"]
        self.client.post("/api/v2/assets/events", {"asset_id": asset_id, "extra": dict(extra)})
        return wait_for(lambda: next(iter(self.run_ids() - before), None), 60, "the serving run of the event")

    def task_states(self, run_id: str) -> dict[str, str]:
        return {t["task_id"]: t["state"] for t in self.client.get(f"{self.run_path(run_id)}/taskInstances")[
            "task_instances"]}

    def finished(self, run_id: str, timeout: float) -> str:
        return wait_for(lambda: (s := self.client.get(self.run_path(run_id))["state"]) in ("success", "failed") and s,
                        timeout, f"serving run {run_id} to finish")

    def deployed_events(self) -> list[dict]:
        return self.client.asset_events("deployed_model")


def served_version(cfg) -> str | None:
    return httpx.get(f"{cfg.model_server_url}/version", timeout=10).json()["version"]


def test_approved_promotion_skewed_rollback_and_rejection_on_live_traffic(rollout_stack, receiver):
    import pandas as pd

    import model_registry
    import sample_model
    from features import samples
    from serving.client import ServerClient, flight_table_body
    from training.dataset import labelled_flights_between

    cfg = rollout_stack
    api = Api()
    t0 = time.monotonic()
    # Only the test's versions are in play: no training run registers one of its own.
    for dag_id in ("training", "monitoring"):
        wait_for(lambda: api.client.get(f"/api/v2/dags/{dag_id}"), 120, f"the {dag_id} DAG to be parsed")
        api.patch(f"/api/v2/dags/{dag_id}", {"is_paused": True}).raise_for_status()

    # -- features on the stack: January and February through dataops ---------------------------
    for month in ("2013-01", "2013-02"):
        samples.drop(month)
    wait_for(lambda: sum(1 for e in api.client.asset_events("feature_table") for f in e["extra"]["files"]
                         if f["kind"] == "flights" and f["status"] == "accepted") >= 2, 240,
             "January and February's features online")
    split = sample_model.split()
    good, retrained = sample_model.fit(split, max_iter=40, seed=0), sample_model.fit(split, max_iter=40, seed=1)
    # v4, the one a person rejects, is v1's model again: the judge passed that pair (v1, v2) already
    models = (good, retrained, sample_model.fit_skewed(split), good)
    v1, v2, v3, v4 = (sample_model.register(m, split, cfg.model_name, cfg.mlflow_tracking_uri) for m in models)
    print(f"\n[{time.monotonic() - t0:.0f}s] features online, versions {v1}, {v2}, {v3}, {v4} registered")

    # -- v1: a first deployment goes straight to all traffic, nobody asked ---------------------
    run1 = api.announce(cfg, v1)
    assert api.finished(run1, 300) == "success", api.task_states(run1)
    states = api.task_states(run1)
    assert states["approve_promotion"] == "success" and states["publish"] == "success"
    assert served_version(cfg) == v1
    assert not [b for b in receiver.bodies if b["mlops"]["kind"] == "approval_needed"]
    print(f"[{time.monotonic() - t0:.0f}s] v{v1} in production (first deployment, direct)")

    rows = labelled_flights_between(pd.Timestamp(split.test_range[0]), pd.Timestamp(split.test_range[1]), cap=400)
    bodies = [flight_table_body(row, as_of=pd.Timestamp(AS_OF)) for _, row in rows.iterrows()]
    with Traffic(cfg.model_server_url, bodies) as traffic:
        # -- v2: shadow, canary, then a person approves through the REST API -------------------
        run2 = api.announce(cfg, v2)
        ti_path = f"{api.run_path(run2)}/taskInstances/approve_promotion"
        wait_for(lambda: api.client.get(ti_path)["state"] == "awaiting_input"
                 or api.client.get(api.run_path(run2))["state"] == "failed", 420, "the approval step to ask")
        states = api.task_states(run2)
        assert states["approve_promotion"] == "awaiting_input", states
        assert states["judge_canary"] == "success" and states["promote"] in (None, "none")
        question = api.client.get(f"{ti_path}/-1/hitlDetails")
        assert question["options"] == ["Approve", "Reject"] and question["defaults"] == ["Reject"]
        assert question["subject"] == f"Promote version {v2} to all traffic? (production: {v1})"
        assert f"shadow of version {v2} passed" in question["body"]
        assert f"canary of version {v2} passed" in question["body"] and "| agreement |" in question["body"]
        [asked] = [b["mlops"] for b in receiver.bodies if b["mlops"]["kind"] == "approval_needed"]
        assert asked["fields"]["version"] == v2 and "/required_actions" in asked["fields"]["link"]
        # while the person thinks, production and the canary both answer; production is unchanged
        assert model_registry.production_version(cfg.mlflow_tracking_uri, cfg.model_name) == v1
        print(f"[{time.monotonic() - t0:.0f}s] v{v2} passed shadow and canary; approving through the REST API")

        answer = api.patch(f"{ti_path}/-1/hitlDetails", {"chosen_options": ["Approve"]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["responded_by"]["name"] == "admin"
        assert api.finished(run2, 240) == "success", api.task_states(run2)
        mark = len(traffic.answers)
        assert served_version(cfg) == v2
        assert model_registry.production_version(cfg.mlflow_tracking_uri, cfg.model_name) == v2
        deployed = api.deployed_events()[-1]["extra"]
        assert (deployed["version"], deployed["previous_version"]) == (v2, v1)
        shadow, canary = deployed["rollout"]["shadow"], deployed["rollout"]["canary"]
        assert shadow["verdict"] == f"shadow of version {v2} passed" and shadow["numbers"]["rows"] >= 500
        assert canary["verdict"] == f"canary of version {v2} passed" and canary["numbers"]["rows"] >= 200
        approval = api.client.get(ti_path)
        assert approval["state"] == "success"
        print(f"[{time.monotonic() - t0:.0f}s] v{v2} in production")

        # -- v3, trained on a skewed sample: passes offline validation, rolled back from its shadow --
        run3 = api.announce(cfg, v3)
        assert api.finished(run3, 300) == "failed"
        states = api.task_states(run3)
        assert states["validate"] == "success"  # offline validation passed it
        assert states["judge_shadow"] == "failed" and states["rollback"] == "failed"
        assert states["approve_promotion"] == "upstream_failed" and states["promote"] == "upstream_failed"
        assert served_version(cfg) == v2
        assert model_registry.production_version(cfg.mlflow_tracking_uri, cfg.model_name) == v2
        assert traffic.since(mark) == {v2}  # the shadow never answered a request
        assert api.deployed_events()[-1]["extra"]["version"] == v2  # no deployed_model for v3
        print(f"[{time.monotonic() - t0:.0f}s] v{v3} rolled back from its shadow")

        # -- v4, a good version a person rejects: the canary is removed, production stays -----------
        run4 = api.announce(cfg, v4)
        ti4 = f"{api.run_path(run4)}/taskInstances/approve_promotion"
        wait_for(lambda: api.client.get(ti4)["state"] == "awaiting_input"
                 or api.client.get(api.run_path(run4))["state"] == "failed", 420, "the approval step to ask")
        assert api.task_states(run4)["approve_promotion"] == "awaiting_input", api.task_states(run4)
        assert ServerClient(cfg.model_server_url).rollout_state()["mode"] == "canary"
        answer = api.patch(f"{ti4}/-1/hitlDetails", {"chosen_options": ["Reject"]})
        assert answer.status_code == 200, answer.text
        assert api.finished(run4, 240) == "failed"
        states = api.task_states(run4)
        assert states["approve_promotion"] == "failed" and states["rollback"] == "failed"
        assert states["promote"] == "upstream_failed" and states["publish"] == "upstream_failed"
        mark = len(traffic.answers)
        wait_for(lambda: len(traffic.answers) > mark + 50, 30, "traffic after the rejection")
        assert traffic.since(mark) == {v2}  # the canary no longer answers
        assert ServerClient(cfg.model_server_url).rollout_state()["candidate_version"] is None
        assert served_version(cfg) == v2
        assert model_registry.production_version(cfg.mlflow_tracking_uri, cfg.model_name) == v2
        assert api.deployed_events()[-1]["extra"]["version"] == v2  # no deployed_model for v4
        print(f"[{time.monotonic() - t0:.0f}s] v{v4} rejected through the REST API, removed from its canary")
    # the rollout never cost a request (a reload or promotion may at worst drop one in a hundred)
    assert traffic.errors <= 0.01 * len(traffic.answers), (traffic.errors, len(traffic.answers))
    print(f"traffic: {len(traffic.answers)} answered, {traffic.errors} errors")

    # -- what a person sees: the alert at the receiver names the rollback, the version and why --------
    def rollback_alert():
        return next((b for b in receiver.bodies if b["mlops"]["fields"].get("run_id") == run3
                     and b["mlops"]["title"] == "serving.rollback failed"), None)

    alert = wait_for(rollback_alert, 30, "the rollback's alert at the receiver")
    assert f"version {v3} was rolled back from its shadow: production {v2} serves all traffic" in alert["text"]
    assert "score PSI" in alert["text"] or "agreement" in alert["text"], alert["text"]
    assert alert["blocks"][0]["text"]["text"].startswith("*serving.rollback failed*")
    tags = model_registry.version_tags(model_registry.client(cfg.mlflow_tracking_uri), cfg.model_name, v3)
    assert "shadow of version" in tags["rollback_reason"]

    # the rejection: who rejected, and that the candidate left its canary
    def alert_of(task_id):
        return next((b["mlops"] for b in receiver.bodies if b["mlops"]["fields"].get("run_id") == run4
                     and b["mlops"]["title"] == f"serving.{task_id} failed"), None)

    rejected = wait_for(lambda: alert_of("approve_promotion"), 30, "the rejection's alert")
    assert rejected["text"].startswith(f"promotion of version {v4} rejected by admin"), rejected["text"]
    assert f"Production {v2} is left alone" in rejected["text"]
    rolled_back = wait_for(lambda: alert_of("rollback"), 30, "the rejected version's rollback alert")
    assert rolled_back["text"].startswith(
        f"version {v4} was rolled back from its canary: production {v2} serves all traffic"), rolled_back["text"]
    assert "rejected by admin" in rolled_back["text"]
    tags = model_registry.version_tags(model_registry.client(cfg.mlflow_tracking_uri), cfg.model_name, v4)
    assert "rejected by admin" in tags["rollback_reason"]
    print(f"[{time.monotonic() - t0:.0f}s] done")

