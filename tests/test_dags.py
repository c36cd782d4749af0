"""DAG integrity: every DAG imports, the assets form the chain, and DAG files stay light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
HEAVY = ("pandas", "numpy", "pyarrow", "feast", "mlflow", "sklearn", "evidently", "duckdb", "fastapi")

# (schedule's assets, outlets) of each DAG: the chain described in datasets.py.
CHAIN = {
    "dataops": (set(), {"feature_table"}),
    "training": ({"feature_table", "drift_report"}, {"registered_model"}),
    "serving": ({"registered_model"}, {"deployed_model"}),
    "monitoring": (None, {"drift_report"}),  # started by its own deferrable sensor
    # Records each deployed version's baseline (deployment time) for the monitoring sensor.
    "monitoring_baseline": ({"deployed_model"}, set()),
    # The ingest deadline: its own deferrable sensor watches landing and the batches on their way.
    "dataops_deadline": (None, set()),
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_every_dag_imports(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(CHAIN)


def _schedule_assets(dag) -> set[str]:
    from airflow.sdk import Asset

    found = set()

    def walk(node):
        if isinstance(node, Asset):
            found.add(node.name)
        for child in getattr(node, "objects", ()) or ():
            walk(child)

    walk(getattr(dag.timetable, "asset_condition", None))
    return found


@pytest.mark.parametrize("dag_id", sorted(CHAIN))
def test_schedules_and_outlets_form_the_chain(dagbag, dag_id):
    import datasets

    dag = dagbag.dags[dag_id]
    scheduled_on, emits = CHAIN[dag_id]
    if scheduled_on is not None:
        assert _schedule_assets(dag) == scheduled_on
    outlets = {o.name for t in dag.tasks for o in t.outlets}
    assert outlets == emits
    known = {a.name: a.uri for a in datasets.ALL}
    for task in dag.tasks:
        for outlet in task.outlets:
            assert known[outlet.name] == outlet.uri, "assets must come from datasets.py"
    assert dag.max_active_runs == 1


def test_assets_are_defined_once_in_datasets_py():
    for path in [*DAG_FILES, *REPO.glob("*/**/*.py")]:
        if ".venv" in path.parts or "tests" in path.parts or path.name == "datasets.py":
            continue
        assert "Asset(" not in path.read_text(), f"{path} defines an asset outside datasets.py"


def test_no_direct_links_between_dags():
    for path in DAG_FILES:
        text = path.read_text()
        for banned in ("TriggerDagRunOperator", "ExternalTaskSensor", "ExternalTaskMarker", "xcom_pull(dag_id"):
            assert banned not in text, f"{path.name} uses {banned}"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_a_dag_file_imports_nothing_heavy(dag_file):
    """Parsed alone, in a fresh interpreter, as the dag-processor parses it (httpx comes with airflow.sdk)."""
    code = (
        "import json, sys, runpy\n"
        f"sys.path.append({str(REPO / 'dags')!r})  # as Airflow does: after the repo root\n"
        f"runpy.run_path({str(dag_file)!r})\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("approval, rollout, expected", [
    ("off", "staged", False), ("required", "staged", True), ("required", "direct", False)])
def test_the_approval_step_exists_only_when_required_in_a_staged_rollout(monkeypatch, approval, rollout, expected):
    from airflow.dag_processing.dagbag import DagBag

    from support import reload_settings

    monkeypatch.setenv("MLOPS_PROMOTION_APPROVAL", approval)
    monkeypatch.setenv("MLOPS_ROLLOUT", rollout)
    monkeypatch.setenv("MLOPS_PROMOTION_APPROVAL_MINUTES", "90")
    cfg = reload_settings()
    try:
        dag = DagBag(dag_folder=str(REPO / "dags" / "serving.py")).dags["serving"]
    finally:
        monkeypatch.undo()
        reload_settings()
    assert ("approve_promotion" in dag.task_ids) is expected
    deadline = dag.deadline[0] if isinstance(dag.deadline, list) else dag.deadline
    rollout_minutes = cfg.shadow_max_minutes + cfg.canary_max_minutes if rollout == "staged" else 0
    # the run's deadline allows for the person's answer
    assert deadline.interval.total_seconds() == (cfg.deploy_deadline_minutes + rollout_minutes
                                                 + (90 if expected else 0)) * 60
    if expected:
        assert dag.get_task("approve_promotion").downstream_task_ids == {"promote", "rollback"}
