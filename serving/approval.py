"""The serving DAG's human approval between the canary and full promotion (`MLOPS_PROMOTION_APPROVAL=required`).

Airflow's `ApprovalOperator` (human-in-the-loop, standard provider): the task waits in the
`awaiting_input` state, holding no worker slot, until a person answers in the Required
Actions page or through the REST API
(`PATCH /api/v2/dags/serving/dagRuns/{run}/taskInstances/approve_promotion/-1/hitlDetails`
with `{"chosen_options": ["Approve"]}`), or until the timeout, which answers its default, Reject.

What differs from the stock operator, and why:
- the question is written when the task runs, from the shadow's and canary's verdicts
  (`serving.tasks.approval_request`), and a person is alerted that it waits;
- when the canary was not staged (a first deployment, `MLOPS_ROLLOUT=direct`) there is
  nothing to compare and nothing is asked: the step passes;
- Reject, or no answer in time, *fails* the step (the stock operator would skip what
  follows and the run would end green with the candidate still on the server): the
  reason names who rejected, or says nobody answered, and is recorded for the rollback
  step, which removes the candidate from the server, tags the version and fails the run
  with it, exactly as after a failed judge. Production is never touched. The failure
  callback sends the alert.

Imported by the DAG file: airflow only; the project's heavy modules are imported in the task.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException

from serving.failures import FAILURE_KEY


class PromotionRejected(AirflowFailException):
    """A person rejected the promotion, or nobody answered in time; says who or how long."""


class PromotionApproval(ApprovalOperator):
    """Approve or Reject, asked with the numbers of the verdicts pushed by `verdict_task_ids` (shadow, canary)."""

    def __init__(self, *, verdict_task_ids: tuple[str, str], minutes: float, **kwargs) -> None:
        super().__init__(subject="Promote the candidate to all traffic?",
                         body="(written from the shadow's and canary's verdicts when the step runs)",
                         defaults=self.REJECT, fail_on_reject=True,
                         response_timeout=timedelta(minutes=minutes), **kwargs)
        self.verdict_task_ids = tuple(verdict_task_ids)
        self.minutes = minutes

    def _verdicts(self, context) -> list[dict | None]:
        return [context["ti"].xcom_pull(task_ids=t) for t in self.verdict_task_ids]

    def execute(self, context):
        import alerts
        import settings
        from serving.tasks import approval_alert, approval_request

        shadow, canary = self._verdicts(context)
        request = approval_request(shadow, canary, self.minutes)
        if request is None:
            why = (canary or {}).get("why", "the canary was not staged")
            self.log.info("No approval asked: nothing was compared on live traffic (%s)", why)
            return {"asked": False, "approved": True, "why": why}
        self.subject, self.body = request["subject"], request["body"]
        ti = context["ti"]
        try:
            link = self.generate_link_to_ui(task_instance=ti, base_url=settings.get().airflow_url)
        except Exception as exc:  # the alert still goes, without the link
            self.log.warning("no link to the Required Actions page: %s", exc)
            link = None
        alerts.send(approval_alert(request, link, ti.run_id, self.minutes))
        self.log.info("Asking: %s\n%s", self.subject, self.body)
        return super().execute(context)

    def execute_complete(self, context, event):
        from serving.tasks import approval_outcome

        ti = context["ti"]
        if "error" not in event:
            _, canary = self._verdicts(context)
            approved, message = approval_outcome(event, canary, self.minutes)
            if not approved:
                ti.xcom_push(key=FAILURE_KEY, value=f"{PromotionRejected.__name__}: {message}")
                raise PromotionRejected(message)
            self.log.info(message)
        try:
            answer = super().execute_complete(context, event)
        except Exception as exc:
            ti.xcom_push(key=FAILURE_KEY, value=f"{type(exc).__name__}: {exc}")
            raise
        user = answer.get("responded_by_user") or {}
        at = answer.get("responded_at")
        return {"asked": True, "approved": True, "by": user.get("name") or user.get("id"),
                "at": at.isoformat() if hasattr(at, "isoformat") else at}
