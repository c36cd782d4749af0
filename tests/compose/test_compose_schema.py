"""docker-compose.yaml against the Compose Specification's JSON schema.

The schema is committed next to this file (compose-spec.json; where it comes from:
SCHEMA_SOURCE.md), so the check runs offline and without a Docker engine.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess

import jsonschema
import pytest

from compose_lib import COMPOSE_FILE, ENV_EXAMPLE, REPO, SCHEMA_FILE, load_compose, resolved_compose, service_environment

# sha256 of compose-spec.json as vendored (SCHEMA_SOURCE.md): edits to it must be deliberate.
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_schema_is_the_vendored_compose_spec():
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["title"] == "Compose Specification"
    assert "service" in schema.get("$defs", schema.get("definitions", {}))


def test_compose_file_matches_the_schema(validator):
    assert _errors(validator, load_compose()) == []


def test_compose_file_matches_the_schema_after_interpolation(validator):
    """What compose validates once .env (here .env.example) is substituted."""
    assert _errors(validator, resolved_compose()) == []


@pytest.mark.parametrize("break_it", [
    lambda d: d["services"]["airflow-apiserver"].__setitem__("healthchek", {"test": ["CMD", "true"]}),
    lambda d: d["services"]["postgres"].__setitem__("ports", "5432:5432"),
    lambda d: d["services"]["mlflow"]["depends_on"]["postgres"].__setitem__("condition", "service_ready"),
    lambda d: d.__setitem__("servics", {}),
], ids=["unknown-key", "ports-not-a-list", "bad-condition", "unknown-top-level"])
def test_schema_check_rejects_a_broken_file(validator, break_it):
    doc = copy.deepcopy(load_compose())
    break_it(doc)
    assert _errors(validator, doc), "the schema check must be able to fail"


def _compose_cli() -> list[str] | None:
    """A Compose v2 CLI if this machine has one (DOCKER_COMPOSE_BIN, `docker compose`,
    or a standalone `docker-compose` v2). `config` needs no Docker engine."""
    import os
    import shutil
    import subprocess

    candidates = []
    if os.environ.get("DOCKER_COMPOSE_BIN"):
        candidates.append([os.environ["DOCKER_COMPOSE_BIN"]])
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cli in candidates:
        try:
            out = subprocess.run([*cli, "version", "--short"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip().lstrip("v")[:1] == "2":
            return cli
    return None


def test_docker_compose_config_accepts_the_file():
    """`docker compose config` with .env.example as .env: the real parser, where one exists."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI here (set DOCKER_COMPOSE_BIN to use one)")
    clean_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run(
        [*cli, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE),
         "--profile", "tools", "config", "--format", "json"],
        capture_output=True, text=True, timeout=120, env=clean_env,
    )
    assert result.returncode == 0, result.stderr
    assert "level=warning" not in result.stderr, result.stderr
    config = json.loads(result.stdout)
    ours = resolved_compose()["services"]
    assert set(config["services"]) == set(ours)
    for name in ("airflow-scheduler", "model-server", "mlflow", "minio-init"):
        assert service_environment(config["services"][name]) == service_environment(ours[name]), name
