"""The services the issue asks for, their health checks, ports, images and the image build."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from compose_lib import (
    COMPOSE_FILE,
    DOCKERFILE,
    REPO,
    command_text,
    healthcheck_text,
    is_one_shot,
    load_compose,
    published_ports,
    resolved_compose,
    service_environment,
)

AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
LONG_RUNNING = ("postgres", "minio", "mlflow", "model-server", *AIRFLOW_SERVICES)
ONE_SHOT = ("airflow-init", "minio-init")
PROJECT_IMAGE_SERVICES = ("mlflow", "model-server", "tools", "airflow-init", *AIRFLOW_SERVICES)


@pytest.fixture(scope="module")
def doc() -> dict:
    return resolved_compose()


@pytest.fixture(scope="module")
def services(doc) -> dict:
    return doc["services"]


def test_required_services_exist(services):
    missing = [s for s in (*LONG_RUNNING, *ONE_SHOT, "tools") if s not in services]
    assert missing == []


def test_long_running_services_have_health_checks(services):
    for name, service in services.items():
        if is_one_shot(service) or "profiles" in service:
            continue
        assert healthcheck_text(service), f"{name} has no health check"
        assert service.get("restart") in ("always", "unless-stopped"), f"{name} is not restarted"
    assert set(LONG_RUNNING) <= {n for n, s in services.items() if healthcheck_text(s)}


@pytest.mark.parametrize("name, expected", [
    ("airflow-apiserver", r"curl --fail .*http://localhost:8080/api/v2/version"),
    ("airflow-scheduler", r"curl --fail .*http://localhost:8974/health"),
    ("airflow-dag-processor", r'airflow jobs check --job-type DagProcessorJob --hostname "\$\{HOSTNAME\}"'),
    ("airflow-triggerer", r'airflow jobs check --job-type TriggererJob --hostname "\$\{HOSTNAME\}"'),
    ("mlflow", r"curl --fail .*http://localhost:5000/health"),
    ("model-server", r"curl --fail .*http://localhost:8000/health"),
    ("postgres", r"pg_isready -h 127\.0\.0\.1"),
    ("minio", r"mc ready local"),
])
def test_health_checks_follow_the_official_file(services, name, expected):
    assert re.search(expected, healthcheck_text(services[name])), healthcheck_text(services[name])


def test_exactly_one_scheduler(services):
    schedulers = [n for n, s in services.items() if re.search(r"\bairflow scheduler\b", command_text(s))]
    assert schedulers == ["airflow-scheduler"]
    scheduler = services["airflow-scheduler"]
    assert str((scheduler.get("deploy") or {}).get("replicas", 1)) == "1"
    assert str(scheduler.get("scale", 1)) == "1"


def test_airflow_components_run_their_command(services):
    for name, command in [("airflow-apiserver", "airflow api-server"), ("airflow-scheduler", "airflow scheduler"),
                          ("airflow-dag-processor", "airflow dag-processor"),
                          ("airflow-triggerer", "airflow triggerer")]:
        assert command_text(services[name]) == command


def test_default_executor_needs_no_worker(services):
    """Without a profile: the LocalExecutor. Only the profile `celery` brings workers and a broker."""
    executors = {service_environment(services[n]).get("AIRFLOW__CORE__EXECUTOR") for n in AIRFLOW_SERVICES}
    assert executors == {"LocalExecutor"}, "another executor would need its worker service (and a broker)"
    needs_broker = [n for n, s in services.items() if "celery" in command_text(s) or n == "redis"]
    assert needs_broker and all(services[n].get("profiles") == ["celery"] for n in needs_broker), needs_broker


def test_airflow_components_share_one_configuration(services):
    """Same JWT secret and execution API URL everywhere; DAGs unpaused; no examples."""
    envs = {n: service_environment(services[n]) for n in (*AIRFLOW_SERVICES, "airflow-init")}
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"):
        values = {env.get(key) for env in envs.values()}
        assert len(values) == 1 and None not in values and "" not in values, key
    env = envs["airflow-scheduler"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"].lower() == "false"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/mlops/dags"
    assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"].lower() == "true"


def test_published_ports(services):
    expected = {"airflow-apiserver": (8080, 8080), "mlflow": (5000, 5000), "model-server": (8000, 8000),
                "minio": (9001, 9001)}
    for name, (host, target) in expected.items():
        ports = [(p, t) for _, p, t in published_ports(services[name])]
        assert (host, target) in ports, f"{name} publishes {ports}"
    console = re.search(r'--console-address",\s*":(\d+)"', COMPOSE_FILE.read_text())
    assert console and console.group(1) == "9001"
    assert published_ports(services["postgres"]) == [], "the database stays inside the compose network"


def test_shared_state_volume(services, doc):
    """Feast's offline store (duckdb over local parquet) must be one folder for every
    Airflow component and the model server: a named volume mounted at MLOPS_HOME."""
    for name in (*AIRFLOW_SERVICES, "airflow-init", "model-server", "tools"):
        service = services[name]
        home = service_environment(service)["MLOPS_HOME"]
        offline = service_environment(service)["MLOPS_FEAST_OFFLINE_DIR"]
        assert offline.startswith(home + "/")
        assert f"mlops-state:{home}" in service.get("volumes", []), f"{name} lacks the mlops-state volume"
    assert "mlops-state" in doc["volumes"]


def test_one_shot_jobs_are_waited_for(services):
    """Each init job is adopted by a long-running service (service_completed_successfully),
    so the stack starts in order and `docker compose up --wait` exits 0."""
    for job in ONE_SHOT:
        assert is_one_shot(services[job])
        adopters = [n for n, s in services.items() if not is_one_shot(s) and "profiles" not in s
                    and (s.get("depends_on") or {}).get(job, {}).get("condition") == "service_completed_successfully"]
        assert adopters, f"nothing waits for {job}"
    for name in AIRFLOW_SERVICES:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_depends_on_names_real_services(services):
    for name, service in services.items():
        for dep in service.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown {dep}"
            assert dep != name


def test_one_project_image_built_from_the_dockerfile_once(services):
    """One service builds the image; the others name it and never pull it: some Compose
    implementations build once per service with `build:`, the same image seven times at once."""
    project = [*PROJECT_IMAGE_SERVICES, "airflow-worker-1", "airflow-worker-2"]
    images = {services[n]["image"] for n in project}
    assert len(images) == 1
    builders = [n for n, s in services.items() if "build" in s]
    assert builders == ["airflow-init"], builders
    build = services["airflow-init"]["build"]
    assert build["context"] == "." and build["dockerfile"] == "Dockerfile"
    for name in project:
        if name != "airflow-init":
            assert services[name]["pull_policy"] == "never", name
    assert command_text(services["model-server"]).startswith("uvicorn serving.app:app --host 0.0.0.0 --port 8000")
    assert command_text(services["mlflow"]).startswith("mlflow server --host 0.0.0.0 --port 5000")
    mlflow_env = service_environment(services["mlflow"])
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
    assert mlflow_env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert mlflow_env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_pulled_images_are_pinned_and_documented():
    """Every image pulled from a registry has an explicit tag (not latest), and the
    comment above it says where its publisher documents that tag."""
    lines = COMPOSE_FILE.read_text().splitlines()
    raw = load_compose()
    built = {s["image"] for s in raw["services"].values() if "build" in s}
    pulled = 0
    for i, line in enumerate(lines):
        m = re.match(r"\s*image:\s*(\S+)\s*$", line)
        if not m or m.group(1) in built:
            continue
        image = m.group(1)
        pulled += 1
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "$" not in image, f"unpinned image {image}"
        comment = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            comment.append(lines[j])
            j -= 1
        assert any("https://" in c for c in comment), f"{image}: no comment saying where the tag is documented"
    assert pulled >= 3  # postgres, minio, minio-init


def test_no_pip_additional_requirements():
    for path in (COMPOSE_FILE, DOCKERFILE, REPO / ".env.example"):
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in path.read_text().replace(
            "No _PIP_ADDITIONAL_REQUIREMENTS", ""), path.name


def test_dockerfile_installs_from_the_lock_file():
    text = DOCKERFILE.read_text()
    instructions = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    froms = [line.split()[1] for line in instructions if line.startswith("FROM ")]
    assert froms and all(f == "python:3.11-slim" for f in froms), froms
    assert "https://hub.docker.com/_/python" in text, "say where the base image's tag is documented"
    assert re.search(r"^COPY requirements\.lock ", text, re.M)
    assert re.search(r"pip install [^\n]*-r requirements\.lock", text)
    # Nothing else is installed into the environment: only the pinned installer itself.
    installs = re.findall(r"pip install ([^\n\\&]*)", text)
    for args in installs:
        assert "-r requirements.lock" in args or re.fullmatch(r"--no-cache-dir uv==[\d.]+\s*", args), args
    assert re.search(r"^ENV [^\n]*PYTHONPATH=/opt/mlops", text, re.M) or "PYTHONPATH=/opt/mlops" in text
    assert "AIRFLOW_HOME=/opt/airflow" in text
    assert re.search(r"^USER \$\{AIRFLOW_UID\}", text, re.M) and "ARG AIRFLOW_UID=50000" in text


def test_scripts_exist_and_parse():
    raw = load_compose()
    mounted = [v.split(":")[0] for s in raw["services"].values() for v in s.get("volumes", [])
               if isinstance(v, str) and v.startswith("./")]
    assert "./docker/postgres-init.sh" in mounted and "./docker/minio-init.sh" in mounted
    for path in mounted:
        assert (REPO / path).is_file(), path
    assert "/opt/mlops/docker/airflow-init.sh" in command_text(raw["services"]["airflow-init"])
    for script in sorted((REPO / "docker").glob("*.sh")):
        shell = "bash" if script.read_text().startswith("#!/usr/bin/env bash") else "sh"
        if shutil.which(shell):
            result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
            assert result.returncode == 0, f"{script.name}: {result.stderr}"


def test_compose_section_of_the_readme_is_complete():
    text = (REPO / "README.md").read_text()
    for needle in ("cp .env.example .env", "docker compose up -d --build --wait", "docker compose ps",
                   "http://localhost:8080", "http://localhost:5000", "http://localhost:8000",
                   "http://localhost:9001", "AIRFLOW_ADMIN_PASSWORD",
                   "docker compose run --rm tools make drop MONTH=", "aws s3 cp", "mc cp",
                   "--endpoint-url", "Assets", "docker compose down -v"):
        assert needle in text, f"README.md (compose section) does not mention {needle!r}"
