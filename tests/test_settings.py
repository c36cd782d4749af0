"""One settings module reads the environment; the embedded defaults need nothing."""

from __future__ import annotations

import re
from pathlib import Path

import settings

REPO = Path(__file__).resolve().parents[1]


def test_embedded_defaults_need_no_environment(monkeypatch, tmp_path):
    for var in list(__import__("os").environ):
        if var.startswith("MLOPS_") or var == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(var)
    cfg = settings.load()
    assert cfg.home == REPO / ".local"
    assert cfg.storage_url == (REPO / ".local" / "storage").as_uri()
    assert cfg.airflow_db_url.startswith("sqlite:///")
    assert cfg.mlflow_tracking_uri == "http://127.0.0.1:5000"


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_STORAGE_URL", "s3://bucket/prefix/")
    monkeypatch.setenv("MLOPS_GATE_MARGIN", "0.02")
    cfg = settings.load()
    assert cfg.home == tmp_path
    assert cfg.storage_url == "s3://bucket/prefix"
    assert cfg.gate_margin == 0.02
    assert cfg.feast_registry == str(tmp_path / "feast" / "registry.db")


def test_every_variable_is_in_env_example():
    source = (REPO / "settings.py").read_text()
    read = set(re.findall(r'_(?:env|int|float)\("([A-Z0-9_]+)"', source))
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M))
    assert read and read <= listed, f"missing from .env.example: {sorted(read - listed)}"


def test_only_settings_reads_the_environment():
    offenders = []
    for path in REPO.glob("**/*.py"):
        rel = path.relative_to(REPO)
        if rel.parts[0] in {".venv", "tests", ".local", "ops", "bench"} or rel.name == "settings.py":
            continue
        text = path.read_text()
        if re.search(r"os\.environ|os\.getenv", text):
            offenders.append(str(rel))
    assert offenders == []
