"""The compose profile `celery`: Redis, two Celery workers and the scheduler's Celery settings,
as in Airflow's official docker-compose file for Airflow 3."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from compose_lib import COMPOSE_FILE, DOCKERFILE, REPO, command_text, healthcheck_text, resolved_compose, \
    service_environment

WORKERS = ("airflow-worker-1", "airflow-worker-2")


@pytest.fixture(scope="module")
def services() -> dict:
    return resolved_compose()["services"]


def test_profile_celery_adds_redis_and_two_workers(services):
    in_profile = sorted(n for n, s in services.items() if "celery" in (s.get("profiles") or []))
    assert in_profile == sorted(["redis", *WORKERS])
    assert re.fullmatch(r"redis:\d+\.\d+-\w+", services["redis"]["image"])
    assert healthcheck_text(services["redis"]) == "CMD redis-cli ping"
    assert services["redis"].get("ports") is None, "the broker stays inside the compose network"


def test_workers_run_the_project_image_and_answer_celery_ping(services):
    image = services["airflow-scheduler"]["image"]
    for name in WORKERS:
        worker = services[name]
        assert worker["image"] == image and worker["pull_policy"] == "never" and "build" not in worker
        assert command_text(worker) == "airflow celery worker --queues default,training"
        assert re.search(r"celery --app airflow\.providers\.celery\.executors\.celery_executor\.app inspect ping "
                         r'-d "celery@\$\{HOSTNAME\}"', healthcheck_text(worker)), healthcheck_text(worker)
        assert worker["restart"] == "unless-stopped"
        assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
        assert worker["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert service_environment(worker)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert f"mlops-state:{service_environment(worker)['MLOPS_HOME']}" in worker["volumes"]


def test_scheduler_and_workers_share_the_celery_settings(services):
    keys = ("AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX", "AIRFLOW__OPERATORS__DEFAULT_QUEUE",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT")
    scheduler = service_environment(services["airflow-scheduler"])
    for name in WORKERS:
        worker = service_environment(services[name])
        assert {k: worker[k] for k in keys} == {k: scheduler[k] for k in keys}, name
    assert scheduler["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert scheduler["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + scheduler["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert scheduler["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == "ops.celery_config.CELERY_CONFIG"
    # The scheduler waits for redis when the profile is on, and only then.
    assert services["airflow-scheduler"]["depends_on"]["redis"] == {"condition": "service_healthy", "required": False}


def _run_entrypoint(tmp_path: Path, resolvable: bool) -> str:
    """docker/airflow-executor.sh with a stand-in `getent` that knows `redis` or not."""
    bin_dir = tmp_path / ("with" if resolvable else "without")
    bin_dir.mkdir()
    getent = bin_dir / "getent"
    getent.write_text("#!/bin/sh\n" + ('[ "$2" = redis ] && echo "10.0.0.9 redis" && exit 0\n' if resolvable else "")
                      + "exit 2\n")
    getent.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    out = subprocess.run(["bash", str(REPO / "docker" / "airflow-executor.sh"), "bash", "-c",
                          'echo "executor=$AIRFLOW__CORE__EXECUTOR"'], env=env, capture_output=True, text=True,
                         check=True).stdout
    return out.strip().splitlines()[-1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_scheduler_entrypoint_picks_the_executor_of_the_profile(services, tmp_path):
    assert command_text(services["airflow-scheduler"], "entrypoint") == "bash /opt/mlops/docker/airflow-executor.sh"
    assert command_text(services["airflow-scheduler"]) == "airflow scheduler"
    assert _run_entrypoint(tmp_path, resolvable=True) == "executor=CeleryExecutor"
    assert _run_entrypoint(tmp_path, resolvable=False) == "executor=LocalExecutor"


def test_image_quiets_gitpython_without_git():
    """The image has no git: GitPython warns at every MLflow run unless told to be quiet."""
    env_lines = [line for line in DOCKERFILE.read_text().splitlines() if "GIT_PYTHON_REFRESH" in line]
    assert any("GIT_PYTHON_REFRESH=quiet" in line for line in env_lines), env_lines
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.skip("no .venv")
    no_git = {k: v for k, v in os.environ.items() if not k.startswith("GIT_PYTHON")}
    no_git["PATH"] = "/nonexistent"
    code = "import git"
    loud = subprocess.run([str(python), "-c", code], env=no_git, capture_output=True, text=True)
    quiet = subprocess.run([str(python), "-c", code], env={**no_git, "GIT_PYTHON_REFRESH": "quiet"},
                           capture_output=True, text=True)
    assert loud.returncode != 0 or "git executable" in loud.stderr.lower()  # what the image did before
    assert quiet.returncode == 0 and "git executable" not in quiet.stderr.lower(), quiet.stderr


def test_compose_file_mentions_the_profile():
    assert "docker compose --profile celery up -d --build --wait" in COMPOSE_FILE.read_text()
