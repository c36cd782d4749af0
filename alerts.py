"""Alerts: every failure and every decision that needs a person reaches one.

One function sends: `send(Alert)`. With `MLOPS_ALERT_WEBHOOK_URL` set, it POSTs
Slack-compatible JSON (`text` plus `blocks`, which Slack, Mattermost and most chat
webhooks accept; the structured fields ride along under `mlops`). Without a URL, or
when the POST fails, the alert is appended as one JSON line to `alerts/alerts.jsonl`
under `MLOPS_HOME`; it is always written to the log (the task log, in a task), so
nothing is lost.

Who sends what:
- any task that fails for good (retries spent): `TaskFailureNotifier`, the
  `on_failure_callback` of every DAG's tasks: validation failed, rollback (its reason),
  a report that cannot be built;
- dataops, files or rows quarantined (`quarantined`);
- monitoring, features missing from served rows (`data_quality_incident`);
- serving, a promotion waiting for a person's approval (`approval_needed`,
  `serving.approval`; the rejection itself is the failed `approve_promotion` step's);
- Airflow's Deadline Alerts (`deadline_missed`, run by the triggerer): a registered
  version not serving within `MLOPS_DEPLOY_DEADLINE_MINUTES`;
- the ingest deadline (`features.ingest_deadline.send_alerts`, kind `deadline_missed`): a
  file noticed in landing that has not reached `feature_table` within
  `MLOPS_INGEST_DEADLINE_MINUTES` (not a Deadline Alert; that module says why).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from airflow.sdk import BaseNotifier

import settings

log = logging.getLogger(__name__)

ALERTS_FILE = ("alerts", "alerts.jsonl")  # under MLOPS_HOME


@dataclass
class Alert:
    kind: str  # task_failed | quarantined | data_quality_incident | deadline_missed | approval_needed
    title: str
    text: str
    fields: dict = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def payload(alert: Alert) -> dict:
    """The webhook body: Slack's `text` and `blocks`, and the alert itself under `mlops`."""
    facts = " | ".join(f"{k}: {v}" for k, v in alert.fields.items() if v not in (None, "", [], {}))
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{alert.title}*\n{alert.text}"}}]
    if facts:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": facts}]})
    return {"text": f"[mlops] {alert.title}: {alert.text}", "blocks": blocks, "mlops": asdict(alert)}


def _write_local(alert: Alert, why: str) -> str:
    path = settings.get().home.joinpath(*ALERTS_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps({**asdict(alert), "delivered_to": why}, default=str) + "\n")
    return str(path)


def send(alert: Alert, cfg: settings.Settings | None = None) -> str:
    """Deliver one alert; returns where it went: the webhook URL, or the alerts file."""
    import httpx

    cfg = cfg or settings.get()
    log.warning("ALERT %s: %s: %s %s", alert.kind, alert.title, alert.text, alert.fields)
    if cfg.alert_webhook_url:
        try:
            resp = httpx.post(cfg.alert_webhook_url, json=payload(alert), timeout=10)
            resp.raise_for_status()
            return cfg.alert_webhook_url
        except httpx.HTTPError as exc:
            log.error("alert webhook failed (%r); the alert goes to the alerts file", exc)
            return _write_local(alert, f"file (webhook failed: {exc!r})")
    return _write_local(alert, "file")


class TaskFailureNotifier(BaseNotifier):
    """`on_failure_callback` of every task: names the task, the run, the error and where its log is."""

    def notify(self, context) -> None:
        ti = context.get("ti") or context.get("task_instance")
        error = context.get("exception")
        dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
        task_id = getattr(ti, "task_id", "?")
        send(Alert(
            kind="task_failed",
            title=f"{dag_id}.{task_id} failed",
            text=str(error) if error else "the task failed (no exception recorded)",
            fields={"dag_id": dag_id, "task_id": task_id, "run_id": getattr(ti, "run_id", None),
                    "try_number": getattr(ti, "try_number", None), "log_url": getattr(ti, "log_url", None)},
        ))


on_task_failure = TaskFailureNotifier()


async def deadline_missed(what: str, dag_id: str, minutes: float, **context) -> None:
    """The callback of a Deadline Alert (runs in the triggerer): `what` did not happen in time."""
    import asyncio

    run = context.get("dag_run") or {}
    run_id = run.get("run_id") if isinstance(run, dict) else getattr(run, "run_id", None)
    await asyncio.to_thread(send, Alert(
        kind="deadline_missed", title=f"deadline missed: {what}",
        text=f"the {dag_id} run did not finish within {minutes:g} minutes",
        fields={"dag_id": dag_id, "run_id": run_id, "minutes": minutes},
    ))
