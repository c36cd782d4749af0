"""Helpers shared by the tests (and the benchmarks): settings, ports, homes.

Importable as `support` from any test (pytest puts tests/ on the path for its
conftest) and as `tests.support` from the repo root.
"""

from __future__ import annotations

import socket
from pathlib import Path

import settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reload_settings() -> settings.Settings:
    """Re-read the environment (nothing else reads it: the Feast repo reads no settings)."""
    settings.get.cache_clear()
    return settings.get()


def use_home(monkeypatch, home: Path, **env: str) -> settings.Settings:
    """Point settings at `home` (plus any extra variables) for the rest of the test."""
    monkeypatch.setenv("MLOPS_HOME", str(home))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return reload_settings()
