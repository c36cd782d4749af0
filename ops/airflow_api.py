"""A small client for Airflow's REST API v2, used by the demo, lineage and tests."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

import settings


def password_file(cfg: settings.Settings | None = None) -> Path:
    """Where the simple auth manager keeps the generated admin password."""
    cfg = cfg or settings.get()
    return cfg.home / "airflow" / "simple_auth_manager_passwords.json.generated"


def admin_password(cfg: settings.Settings | None = None) -> str:
    return json.loads(password_file(cfg).read_text())["admin"]


class AirflowClient:
    def __init__(self, base_url: str | None = None, password: str | None = None, timeout: float = 30.0):
        cfg = settings.get()
        self.base_url = (base_url or cfg.airflow_url).rstrip("/")
        self._password = password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token: str | None = None

    def _auth(self) -> dict:
        if self._token is None:
            password = self._password or admin_password()
            resp = self._http.post("/auth/token", json={"username": "admin", "password": password})
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def get(self, path: str, retries: int = 10, **params) -> dict:
        query = {k: v for k, v in params.items() if v is not None}
        for attempt in range(retries):
            resp = self._http.get(path, params=query, headers=self._auth())
            # Airflow 3.3 answers 500 on /assets/events while an event's created run is still
            # queued (its start_date is None and the response model requires one): a passing state.
            if resp.status_code < 500 or attempt == retries - 1:
                break
            time.sleep(1)
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, body: dict) -> dict:
        resp = self._http.post(path, json=body, headers=self._auth())
        resp.raise_for_status()
        return resp.json()

    def health(self) -> dict:
        return self._http.get("/api/v2/monitor/health").json()

    def asset(self, name: str) -> dict | None:
        for a in self.get("/api/v2/assets", name_pattern=name, limit=100)["assets"]:
            if a["name"] == name:
                return a
        return None

    def asset_events(self, name: str, limit: int = 100) -> list[dict]:
        """Events of the asset, oldest first."""
        asset = self.asset(name)
        if asset is None:
            return []
        events = self.get("/api/v2/assets/events", asset_id=asset["id"], order_by="-timestamp", limit=limit)
        return list(reversed(events["asset_events"]))

    def wait_for_event(self, name: str, after_id: int = 0, timeout: float = 300, poll: float = 1.0,
                       predicate=None) -> dict:
        """The first event of `name` with id > after_id (and matching `predicate`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                events = self.asset_events(name)
            except httpx.TransportError:  # a busy api-server is not a missing event
                events = []
            for ev in events:
                if ev["id"] > after_id and (predicate is None or predicate(ev)):
                    return ev
            time.sleep(poll)
        raise TimeoutError(f"no new {name!r} event within {timeout:.0f}s")

    def dag_runs(self, dag_id: str, limit: int = 20) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns", order_by="-start_date", limit=limit)["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

