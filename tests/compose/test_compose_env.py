"""Variables and secrets: .env.example covers everything, secrets come only from .env."""

from __future__ import annotations

import re
import shutil
import subprocess
from urllib.parse import urlparse

import pytest

from compose_lib import (
    COMPOSE_FILE,
    DOCKERFILE,
    ENV_EXAMPLE,
    REPO,
    compose_refs,
    env_values,
    interpolate,
    is_secret,
    load_compose,
    parse_env_file,
    refs,
    resolved_compose,
    service_environment,
    settings_variables,
)

ENV_NAMES = [e.name for e in parse_env_file()]


def test_env_example_has_each_variable_once():
    dupes = sorted({n for n in ENV_NAMES if ENV_NAMES.count(n) > 1})
    assert dupes == []


def test_every_compose_variable_is_in_env_example():
    used = {ref.name for _, ref in compose_refs()}
    assert used, "the compose file should take its configuration from .env"
    missing = sorted(used - set(ENV_NAMES))
    assert missing == [], f"in docker-compose.yaml but not in .env.example: {missing}"


def test_every_settings_variable_is_in_env_example():
    used = settings_variables()
    assert len(used) >= 30, f"parsing settings.py found too few variables: {sorted(used)}"
    missing = sorted(used - set(ENV_NAMES))
    assert missing == [], f"read by settings.py but not in .env.example: {missing}"


def test_every_settings_variable_reaches_the_containers():
    """Setting a variable in .env must change the stack: compose passes each one on."""
    doc = load_compose()
    common = set(doc["x-mlops-env"])
    airflow = set(doc["x-airflow-common"]["environment"])
    mlflow = {ref.name for v in service_environment(doc["services"]["mlflow"]).values() for ref in refs(v)}
    # Database URLs with passwords go only to the service that needs them.
    assert "MLOPS_AIRFLOW_DB_URL" not in common and "MLOPS_AIRFLOW_DB_URL" in airflow
    assert "MLOPS_MLFLOW_BACKEND_STORE_URI" not in common | airflow and "MLOPS_MLFLOW_BACKEND_STORE_URI" in mlflow
    # Read only by ops/stack.py, which compose does not use.
    local_stack_only = {"MLOPS_PRELOAD_TASK_LIBRARIES", "MLOPS_CELERY_BROKER_URL", "MLOPS_CELERY_RESULT_BACKEND",
                        "MLOPS_CELERY_WORKERS", "MLOPS_DROP_ON_DOWN", "MLOPS_BATCH_NICENESS"}
    missing = sorted(settings_variables() - common - airflow - mlflow - local_stack_only)
    assert missing == [], f"read by settings.py but given to no container: {missing}"
    # x-mlops-env passes each variable under its own name.
    for name, value in doc["x-mlops-env"].items():
        assert [r.name for r in refs(str(value))] == [name], f"x-mlops-env {name}: {value!r}"


def test_every_env_example_variable_has_a_comment():
    bare = [e.name for e in parse_env_file() if not e.comments]
    assert bare == [], f"variables without a comment in .env.example: {bare}"


def test_env_example_references_only_variables_defined_above():
    seen: set[str] = set()
    for entry in parse_env_file():
        for ref in refs(entry.raw):
            assert ref.name in seen, f"{entry.name} uses ${{{ref.name}}} before it is defined"
        seen.add(entry.name)


def test_secret_variables_are_marked_change_me():
    secrets = [e for e in parse_env_file() if is_secret(e.name) or "PASSWORD" in e.name]
    assert {"POSTGRES_PASSWORD", "AIRFLOW__API_AUTH__JWT_SECRET", "MLOPS_MODEL_SERVER_ADMIN_TOKEN",
            "AWS_SECRET_ACCESS_KEY", "MINIO_ROOT_PASSWORD"} <= {e.name for e in secrets}
    for entry in secrets:
        assert entry.raw, f"{entry.name} is empty: compose would refuse to start"
        assert any("change me" in c.lower() for c in entry.comments), f"{entry.name} is not marked 'change me'"


def test_no_secret_has_a_default_in_the_compose_file():
    """${SECRET:-default} (or any reference that tolerates a missing secret) is forbidden:
    every secret reference is ${NAME:?message}, so compose stops when .env lacks it."""
    bad = [f"{'/'.join(map(str, path))}: {ref.text}" for path, ref in compose_refs()
           if is_secret(ref.name) and ref.op != ":?"]
    assert bad == []
    assert any(is_secret(ref.name) for _, ref in compose_refs())


def test_no_literal_secret_in_the_compose_file():
    doc = load_compose()
    # 1. Environment entries named like secrets hold a reference, never a value.
    for sname, service in {**doc["services"], "x-mlops-env": {"environment": doc["x-mlops-env"]}}.items():
        for key, value in service_environment(service).items():
            if is_secret(key):
                assert re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:\?[^}]*)?\}", value), \
                    f"{sname}: {key} must come from .env, got {value!r}"
    # 2. No URL in the file carries a literal password.
    text = COMPOSE_FILE.read_text()
    for m in re.finditer(r"[a-z0-9+]+://[^\s/@:]+:([^\s@]+)@", text):
        assert m.group(1).startswith("${"), f"literal password in a URL: {m.group(0)}"
    # 3. None of the example's secret values was copied into the compose file,
    #    the Dockerfile or the scripts in docker/.
    values = env_values()
    secret_values = {v for k, v in values.items() if is_secret(k) and len(v) >= 8}
    files = [COMPOSE_FILE, DOCKERFILE, *sorted((REPO / "docker").glob("*"))]
    for path in files:
        content = path.read_text()
        for v in secret_values:
            assert v not in content, f"{path.name} contains a secret value from .env.example"


def test_env_example_configures_the_compose_stack():
    """Copying .env.example to .env is all it takes: its values are the compose stack's."""
    env = env_values()
    services = set(load_compose()["services"])

    def host(url: str) -> str:
        return urlparse(url).hostname or ""

    assert env["MLOPS_STORAGE_URL"].startswith("s3://")
    assert env["MLOPS_MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert urlparse(env["MLOPS_STORAGE_URL"]).netloc != urlparse(env["MLOPS_MLFLOW_ARTIFACTS_DESTINATION"]).netloc
    for name in ("MLOPS_S3_ENDPOINT_URL", "MLOPS_AIRFLOW_URL", "MLFLOW_TRACKING_URI", "MLOPS_MODEL_SERVER_URL"):
        assert host(env[name]) in services, f"{name}={env[name]} does not name a compose service"
    for name in ("MLOPS_AIRFLOW_DB_URL", "MLOPS_MLFLOW_BACKEND_STORE_URI",
                 "MLOPS_FEAST_REGISTRY", "MLOPS_FEAST_ONLINE_STORE"):
        url = urlparse(env[name])
        assert url.scheme.split("+")[0] == "postgresql", f"{name} is not a Postgres URL"
        assert url.hostname == "postgres" and url.password, name
        assert url.path.lstrip("/").startswith(env["MLOPS_DB_PREFIX"]), f"{name}: database lacks MLOPS_DB_PREFIX"
    dbs = [urlparse(env[n]).path for n in ("MLOPS_AIRFLOW_DB_URL", "MLOPS_MLFLOW_BACKEND_STORE_URI",
                                           "MLOPS_FEAST_REGISTRY", "MLOPS_FEAST_ONLINE_STORE")]
    assert len(set(dbs)) == 4, "each store has its own database"
    assert env["MLOPS_FEAST_OFFLINE_DIR"].startswith(env["MLOPS_HOME"] + "/")
    assert env["MLOPS_LOCAL_S3_SERVER"] == "false"
    assert len(env["AWS_SECRET_ACCESS_KEY"]) >= 8 and len(env["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO's minimum
    from cryptography.fernet import Fernet

    Fernet(env["AIRFLOW__CORE__FERNET_KEY"].encode())  # raises if it is not a Fernet key


def test_postgres_init_script_creates_every_database_with_its_role():
    """Each Postgres URL in .env.example names a database and role that
    docker/postgres-init.sh creates, with the password variable the URL uses."""
    script = (REPO / "docker" / "postgres-init.sh").read_text()
    created = {}
    for m in re.finditer(r'^create_role_and_databases (\w+) "\$\{(\w+):\?\}" (.+)$', script, re.M):
        for db in m.group(3).split():
            created[db] = (m.group(1), m.group(2))
    raw = {e.name: e.raw for e in parse_env_file()}
    for name in ("MLOPS_AIRFLOW_DB_URL", "MLOPS_MLFLOW_BACKEND_STORE_URI",
                 "MLOPS_FEAST_REGISTRY", "MLOPS_FEAST_ONLINE_STORE"):
        url = urlparse(raw[name])
        db = url.path.lstrip("/")
        assert db in created, f"{name}: database {db} is not created by docker/postgres-init.sh"
        role, password_var = created[db]
        assert url.username == role, f"{name}: user {url.username}, but {db} belongs to {role}"
        assert url.password == "${" + password_var + "}", f"{name}: password should be ${{{password_var}}}"
    # The script gets those passwords from the postgres service.
    pg_env = service_environment(load_compose()["services"]["postgres"])
    for role, password_var in created.values():
        assert password_var in pg_env, f"postgres service lacks {password_var}"


def test_minio_init_gets_what_it_needs():
    script = (REPO / "docker" / "minio-init.sh").read_text()
    needed = set(re.findall(r'\$\{([A-Z_][A-Z0-9_]*):\?\}', script))
    assert {"MLOPS_STORAGE_URL", "MLOPS_MLFLOW_ARTIFACTS_DESTINATION", "AWS_ACCESS_KEY_ID"} <= needed
    env = service_environment(resolved_compose()["services"]["minio-init"])
    assert needed <= set(env), f"minio-init lacks {sorted(needed - set(env))}"


def test_dotenv_is_ignored_by_git_and_docker():
    ignore = [line.strip() for line in (REPO / ".gitignore").read_text().splitlines()]
    assert ".env" in ignore or "/.env" in ignore
    if shutil.which("git") and (REPO / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO).returncode == 0
        tracked = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=REPO).returncode == 0
        assert ignored and not tracked
    docker_ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert ".env" in docker_ignore, "the image must never contain .env"
    assert ".venv" in docker_ignore and ".local" in docker_ignore


@pytest.mark.parametrize("text, env, expected", [
    ("${A}", {"A": "1"}, "1"),
    ("${A:-x}", {"A": ""}, "x"),
    ("${A-x}", {"A": ""}, ""),
    ("$$HOSTNAME", {}, "$HOSTNAME"),
    ("${A}:${B:-2}", {"A": "1"}, "1:2"),
])
def test_interpolation_helper(text, env, expected):
    assert interpolate(text, env) == expected


def test_interpolation_helper_stops_on_missing_required():
    from compose_lib import InterpolationError

    with pytest.raises(InterpolationError):
        interpolate("${SECRET:?set it}", {})
    assert ENV_EXAMPLE.exists()
