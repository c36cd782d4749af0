"""Helpers of the serving tests: settings reload, waiting, the server in-process or on a port."""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager

import settings  # noqa: F401
from support import free_port, reload_settings  # noqa: F401  (the serving tests import them from here)

FLIGHT = {
    "carrier": "UA", "flight": 1545, "tailnum": "N14228", "origin": "EWR", "dest": "IAH",
    "sched_dep_ts": "2013-03-30T14:15:00Z", "distance": 1400,
    # The session's online store holds Jan-Mar's last values: EWR's last weather hour was observed at
    # 03:51Z on April 1, so it is fresh (3 h TTL) as of 05:00Z; asked "now", it would be years old.
    "as_of": "2013-04-01T05:00:00Z",
}
ADMIN = {"Authorization": "Bearer test-admin-token"}


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


def wait_until(check, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def app_client():
    """The server app in-process (lifespan included), once it reports ready or not-ready for good."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with TestClient(create_app()) as client:
        yield client


def wait_serving(client, version: str | None) -> dict:
    def check():
        health = client.get("/health").json()
        return health if health["model_version"] == version and (version is None or health["ready"]) else None

    return wait_until(check, what=f"the server to serve version {version}")


class LiveServer:
    """The real app under uvicorn on a free port, in a thread of the test process."""

    def __init__(self, port: int):
        import uvicorn

        from serving.app import create_app

        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        wait_until(lambda: self.server.started, what="uvicorn to start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
