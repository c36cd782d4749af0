"""Helpers shared by the tests (and the benchmarks): settings, ports, homes, live traffic.

Importable as `support` from any test (pytest puts tests/ on the path for its
conftest) and as `tests.support` from the repo root.
"""

from __future__ import annotations

import socket
import threading
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


class Traffic:
    """Requests to the model server from a thread, round and round the bodies, until stopped."""

    def __init__(self, url: str, bodies: list[dict]):
        import httpx

        self.http, self.bodies = httpx.Client(base_url=url, timeout=10), bodies
        self.stop, self.answers, self.errors = threading.Event(), [], 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import httpx

        i = 0
        while not self.stop.is_set():
            try:
                resp = self.http.post("/predict", json=self.bodies[i % len(self.bodies)])
                if resp.status_code == 200:
                    self.answers.append(resp.json())
                else:
                    self.errors += 1
            except httpx.HTTPError:
                self.errors += 1
            i += 1
            self.stop.wait(0.02)

    def since(self, mark: int) -> set[str]:
        return {a["model_version"] for a in self.answers[mark:]}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)
        self.http.close()
