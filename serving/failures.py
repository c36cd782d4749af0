"""Why a step of the serving DAG failed, recorded for its rollback step.

A failing step records its reason as the XCom `failure` (`recording_failure` around
a task body; the server-version sensor pushes it itself), and the rollback step
reads the reasons of the steps the DAG puts before it (`recorded_reasons`).
Imported by the DAG file: standard library and airflow.sdk only.
"""

from __future__ import annotations

import functools

FAILURE_KEY = "failure"


def recording_failure(body):
    """Wrap a task body: if it raises (a skip is not a failure), record why, then fail as before."""

    @functools.wraps(body)
    def recorded(*args, **kwargs):
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowSkipException

        try:
            return body(*args, **kwargs)
        except AirflowSkipException:
            raise
        except Exception as exc:
            get_current_context()["ti"].xcom_push(key=FAILURE_KEY, value=f"{type(exc).__name__}: {exc}")
            raise

    return recorded


def recorded_reasons(ti, task_ids) -> str:
    """'<task>: <reason>; ...' for the given steps that recorded one, in the order given."""
    found = [f"{t}: {r}" for t in task_ids if (r := ti.xcom_pull(task_ids=t, key=FAILURE_KEY))]
    return "; ".join(found) or "a step failed (see the failed task's log)"
