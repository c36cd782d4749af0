"""The human approval between the canary and full promotion, without a scheduler: what a person is asked,
what each answer does, and that a rejection reaches the rollback step as its reason.

The real answer through the REST API of a running api-server is tests/e2e/test_rollout_stack.py's.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from serving.tasks import approval_outcome, approval_request
from support import reload_settings

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "serving.py"

SHADOW = {"version": "3", "stage": "shadow", "production_version": "2", "staged": True, "passed": True,
          "since": "2026-01-01T10:00:00+00:00", "verdict": "shadow of version 3 passed",
          "numbers": {"rows": 512, "agreement": 0.9612345, "score_psi": 0.0123, "latency_ratio": 1.08,
                      "labelled_rows": {"candidate": 40, "production": 40}, "quality": "not judged: 40 < 500"}}
CANARY = {"version": "3", "stage": "canary", "production_version": "2", "staged": True, "passed": True, "share": 0.1,
          "since": "2026-01-01T10:05:00+00:00", "verdict": "canary of version 3 passed",
          "numbers": {"rows": 230, "production_rows": 2011, "error_rate": 0.0, "score_psi": 0.021}}
NOT_STAGED = {"version": "1", "stage": "canary", "production_version": None, "staged": False, "passed": True,
              "why": "first deployment: no production version to compare with"}
WHEN = datetime(2026, 1, 1, 11, 0, tzinfo=timezone.utc)


def test_the_question_shows_both_verdicts_and_what_each_answer_does():
    request = approval_request(SHADOW, CANARY, minutes=1440)

    assert request["subject"] == "Promote version 3 to all traffic? (production: 2)"
    body = request["body"]
    assert "shadow of version 3 passed" in body and "canary of version 3 passed" in body
    assert "| agreement | 0.9612 |" in body and "| labelled_rows.candidate | 40 |" in body
    assert "| rows | 230 |" in body and "| production_rows | 2011 |" in body
    assert "no answer within 1440 minutes" in body and "production 2 is left alone" in body
    assert "0.1 share" in body


def test_nothing_is_asked_when_the_canary_was_not_staged():
    assert approval_request(NOT_STAGED, NOT_STAGED, minutes=5) is None
    assert approval_request(None, None, minutes=5) is None


def test_each_answer_says_who_decided_or_that_nobody_did():
    admin = {"id": "admin", "name": "admin"}
    approved, why = approval_outcome({"chosen_options": ["Approve"], "responded_by_user": admin,
                                      "responded_at": WHEN}, CANARY, 1440)
    assert approved and why == "promotion of version 3 approved by admin (user id admin) at 2026-01-01T11:00:00+00:00"

    approved, why = approval_outcome({"chosen_options": ["Reject"], "responded_by_user": {"id": "7", "name": "ana"},
                                      "responded_at": WHEN}, CANARY, 1440)
    assert not approved
    assert why.startswith("promotion of version 3 rejected by ana (user id 7) at 2026-01-01T11:00:00+00:00")
    assert why.endswith("Production 2 is left alone")

    # the timeout answers the default, Reject, with nobody named (Airflow's awaiting_input sweep)
    approved, why = approval_outcome({"chosen_options": ["Reject"], "responded_by_user": None, "timedout": True,
                                      "responded_at": WHEN}, CANARY, 30)
    assert not approved and "no answer within 30 minutes (taken as Reject)" in why


class FakeTI:
    """The parts of a task instance the approval step and the rollback step use."""

    def __init__(self, xcoms: dict, task=None, run_id: str = "manual__1"):
        self.xcoms, self.pushed, self.task, self.run_id = dict(xcoms), {}, task, run_id
        self.dag_id, self.task_id, self.map_index = "serving", getattr(task, "task_id", "approve_promotion"), -1

    def xcom_pull(self, task_ids, key="return_value"):
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, key, value):
        self.pushed[key] = value
        self.xcoms[(self.task_id, key)] = value


@pytest.fixture(scope="module")
def approval_dag():
    """The serving DAG as parsed with MLOPS_PROMOTION_APPROVAL=required."""
    from airflow.dag_processing.dagbag import DagBag

    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_PROMOTION_APPROVAL", "required")
    mp.setenv("MLOPS_ROLLOUT", "staged")
    mp.setenv("MLOPS_PROMOTION_APPROVAL_MINUTES", "45")
    reload_settings()
    try:
        bag = DagBag(dag_folder=str(DAG_FILE))
        assert not bag.import_errors, bag.import_errors
        yield bag.dags["serving"]
    finally:
        mp.undo()
        reload_settings()


def test_the_step_sits_between_the_canary_and_promotion_and_times_out_to_reject(approval_dag):
    step = approval_dag.get_task("approve_promotion")
    assert step.upstream_task_ids == {"judge_canary"}
    assert step.downstream_task_ids == {"promote", "rollback"}
    assert step.defaults == ["Reject"] and step.response_timeout.total_seconds() == 45 * 60
    assert step.execution_timeout is None  # the wait is the response timeout's, not the run's
    assert "approve_promotion" in approval_dag.get_task("rollback").upstream_task_ids


def _verdicts(canary=CANARY, shadow=SHADOW) -> dict:
    return {("judge_shadow", "return_value"): shadow, ("judge_canary", "return_value"): canary}


def test_a_rejection_fails_the_step_naming_who_and_records_it_for_the_rollback(approval_dag):
    from serving.approval import PromotionRejected
    from serving.failures import FAILURE_KEY

    step = approval_dag.get_task("approve_promotion")
    ti = FakeTI(_verdicts(), step)
    with pytest.raises(PromotionRejected, match="rejected by ana"):
        step.execute_complete({"ti": ti, "task": step}, {
            "chosen_options": ["Reject"], "params_input": {}, "responded_at": WHEN,
            "responded_by_user": {"id": "7", "name": "ana"}})
    assert ti.pushed[FAILURE_KEY].startswith("PromotionRejected: promotion of version 3 rejected by ana")


def test_an_approval_lets_promotion_go_on(approval_dag):
    step = approval_dag.get_task("approve_promotion")
    answer = step.execute_complete({"ti": FakeTI(_verdicts(), step), "task": step}, {
        "chosen_options": ["Approve"], "params_input": {}, "responded_at": WHEN,
        "responded_by_user": {"id": "admin", "name": "admin"}})
    assert answer == {"asked": True, "approved": True, "by": "admin", "at": WHEN.isoformat()}


def test_a_first_deployment_is_not_held(approval_dag, monkeypatch):
    import alerts

    sent = []
    monkeypatch.setattr(alerts, "send", sent.append)
    step = approval_dag.get_task("approve_promotion")
    answer = step.execute({"ti": FakeTI(_verdicts(NOT_STAGED, NOT_STAGED), step), "task": step})
    assert answer == {"asked": False, "approved": True, "why": NOT_STAGED["why"]}
    assert sent == []


def test_the_rollback_removes_the_rejected_canary_and_fails_the_run_with_the_rejection(approval_dag, monkeypatch):
    from serving import tasks
    from serving.failures import FAILURE_KEY

    aborted = []
    monkeypatch.setattr(tasks, "abort_rollout", lambda plan, reason: aborted.append((plan, reason)) or
                        "the candidate was removed from the server (canary mode)")
    rejection = "PromotionRejected: promotion of version 3 rejected by ana (user id 7). Production 2 is left alone"
    shadow_plan = {k: v for k, v in SHADOW.items() if k not in ("verdict", "numbers", "passed")}
    canary_plan = {k: v for k, v in CANARY.items() if k not in ("verdict", "numbers", "passed")}
    ti = FakeTI({("start_shadow", "return_value"): shadow_plan, ("start_canary", "return_value"): canary_plan,
                 ("approve_promotion", FAILURE_KEY): rejection}, approval_dag.get_task("rollback"))

    message = tasks.rollback_failed_run(ti, "promote", ["start_shadow", "start_canary"])

    [(plan, reason)] = aborted
    assert plan["stage"] == "canary" and reason == f"approve_promotion: {rejection}"
    assert message.startswith("version 3 was rolled back from its canary: production 2 serves all traffic")
    assert "rejected by ana" in message
