"""A small HTTP client for the model server, used by the serving DAG and the benchmark."""

from __future__ import annotations

import time

import httpx
import pandas as pd

import settings


class ServerError(RuntimeError):
    """The model server answered something other than what was asked for."""


def request_payload(flight) -> dict:
    """A /predict body for one row of the labelled flight table."""
    tailnum = flight["tailnum"]
    return {
        "carrier": str(flight["carrier"]), "flight": int(flight["flight"]),
        "tailnum": None if pd.isna(tailnum) or not str(tailnum) else str(tailnum),
        "origin": str(flight["origin"]), "dest": str(flight["dest"]),
        "sched_dep_ts": pd.Timestamp(flight["event_timestamp"]).isoformat(),
        "distance": float(flight["distance"]),
    }


class ServerClient:
    def __init__(self, base_url: str | None = None, admin_token: str | None = None, timeout: float = 30.0):
        cfg = settings.get()
        self.base_url = (base_url or cfg.model_server_url).rstrip("/")
        self.admin_token = admin_token if admin_token is not None else cfg.model_server_admin_token
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def version(self) -> str | None:
        """The version the server answers with, or None when it has no model (503)."""
        resp = self.http.get("/version")
        if resp.status_code == 503:
            return None
        _check(resp, "GET /version")
        return str(resp.json()["version"])

    def reload(self) -> dict:
        """Ask the server to load what the production alias points to now; returns its answer."""
        resp = self.http.post("/admin/reload", headers={"Authorization": f"Bearer {self.admin_token}"})
        _check(resp, "POST /admin/reload")
        return resp.json()

    def predict(self, payload: dict) -> httpx.Response:
        return self.http.post("/predict", json=payload)

    def predict_batch(self, payloads: list[dict]) -> httpx.Response:
        return self.http.post("/predict/batch", json=payloads)

    def wait_for_version(self, version: str | None, timeout: float, poll: float = 0.5) -> str | None:
        """Poll /version until it reports `version` (None: no model). Returns the last version seen."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                seen = self.version()
            except (httpx.HTTPError, ServerError) as exc:
                seen = f"unreachable ({type(exc).__name__})"
            if seen == version or time.monotonic() >= deadline:
                return seen
            time.sleep(poll)


def _check(resp: httpx.Response, what: str) -> None:
    if resp.status_code != 200:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        raise ServerError(f"{what} answered {resp.status_code}: {str(detail)[:500]}")
