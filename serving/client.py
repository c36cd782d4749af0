"""A small HTTP client for the model server, and the one builder of a `/predict` body.

Used by the serving DAG, the traffic replay and the benchmarks.
"""

from __future__ import annotations

import time

import httpx

import settings


class ServerError(RuntimeError):
    """The model server answered something other than what was asked for."""


def predict_body(*, carrier, flight, tailnum, origin, dest, sched_dep_ts, distance, as_of=None) -> dict:
    """A `POST /predict` body (`serving.schemas.FlightRequest`): what a booking system knows.

    `sched_dep_ts` and `as_of` are timezone-aware datetimes (or pandas Timestamps); a
    missing tail number (None, NaN, pandas' NA or empty) is sent as null. Without `as_of` the
    server answers as of the request's arrival.
    """
    import pandas as pd

    missing_tail = tailnum is None or pd.isna(tailnum) or not str(tailnum)
    body = {
        "carrier": str(carrier), "flight": int(flight),
        "tailnum": None if missing_tail else str(tailnum),
        "origin": str(origin), "dest": str(dest),
        "sched_dep_ts": sched_dep_ts.isoformat(),
        "distance": float(distance),
    }
    if as_of is not None:
        body["as_of"] = as_of.isoformat()
    return body


def flight_table_body(row, as_of=None) -> dict:
    """The `POST /predict` body of one row of the labelled flight table (`features.store.FLIGHTS_TABLE`)."""
    return predict_body(carrier=row["carrier"], flight=row["flight"], tailnum=row["tailnum"], origin=row["origin"],
                        dest=row["dest"], sched_dep_ts=row["event_timestamp"], distance=row["distance"],
                        as_of=as_of)


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

    def _admin(self) -> dict:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def set_candidate(self, version: str, mode: str, share: float | None = None) -> dict:
        """Load `version` beside production in `mode` (shadow | canary); returns the rollout state."""
        body = {"version": str(version), "mode": mode, **({"share": share} if share is not None else {})}
        resp = self.http.post("/admin/candidate", json=body, headers=self._admin())
        _check(resp, "POST /admin/candidate")
        return resp.json()

    def clear_candidate(self) -> dict:
        """Remove the candidate (production answers everything); returns the state before."""
        resp = self.http.delete("/admin/candidate", headers=self._admin())
        _check(resp, "DELETE /admin/candidate")
        return resp.json()

    def promote(self, version: str) -> dict:
        """The candidate serves everything (the production alias must point at it already)."""
        resp = self.http.post("/admin/promote", json={"version": str(version)}, headers=self._admin())
        _check(resp, "POST /admin/promote")
        return resp.json()

    def rollout_state(self) -> dict:
        resp = self.http.get("/admin/rollout", headers=self._admin())
        _check(resp, "GET /admin/rollout")
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
