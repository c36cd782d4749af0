"""The model server's rollout slot: shadow and canary beside production, on real versions and the real app."""

from __future__ import annotations

import dataclasses
import time

import pytest
from serving_helpers import ADMIN, FLIGHT, app_client, unique_name, wait_serving, wait_until

import model_registry


@pytest.fixture(scope="module")
def versions(register) -> dict:
    name = unique_name("rollout")
    return {"name": name, "v1": register(name, "good"), "v2": register(name, "other")}


@pytest.fixture
def serve(serving_env, versions, mlflow_server):
    def apply(**env):
        cfg = serving_env(versions["name"], **env)
        model_registry.point_alias(model_registry.client(mlflow_server), versions["name"],
                                   model_registry.PRODUCTION, versions["v1"])
        return cfg

    return apply


def flights(n: int, start: int = 100) -> list[dict]:
    return [{**FLIGHT, "flight": start + i} for i in range(n)]


def without_request_id(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "request_id"}


def rollout(client) -> dict:
    return client.get("/admin/rollout", headers=ADMIN).json()


ADMIN_CALLS = [
    ("post", "/admin/candidate", {"version": "1", "mode": "shadow"}),
    ("post", "/admin/candidate", {"version": "1", "mode": "canary", "share": 0.5}),
    ("delete", "/admin/candidate", None),
    ("post", "/admin/promote", {"version": "1"}),
    ("get", "/admin/rollout", None),
    ("post", "/admin/reload", None),
]


def test_rollout_endpoints_need_the_token_and_change_nothing_without_it(serve, versions):
    serve()
    with app_client() as client:
        wait_serving(client, versions["v1"])
        assert client.post("/admin/candidate", headers=ADMIN,
                           json={"version": versions["v2"], "mode": "shadow"}).status_code == 200
        before = rollout(client)
        for method, path, body in ADMIN_CALLS:
            body = {**body, "version": versions["v2"]} if body else None
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dGVzdA=="}):
                resp = client.request(method, path, json=body, headers=headers)
                assert resp.status_code == 401, (method, path, headers, resp.text)
        # even a malformed body is refused for the token first, not validated
        assert client.post("/admin/candidate", json={"bogus": 1}).status_code == 401
        after = rollout(client)
        health = client.get("/health").json()
    assert after == before and after["candidate_version"] == versions["v2"] and after["mode"] == "shadow"
    assert health["model_version"] == versions["v1"] and health["rollout"] == "shadow"


def test_a_shadow_scores_every_request_and_no_response_carries_anything_of_it(serve, versions, tmp_path):
    import storage
    from serving.inference_log import MAIN, ROLE, SHADOW, version_url

    serve()
    asked = flights(20)
    with app_client() as client:
        wait_serving(client, versions["v1"])
        alone = [client.post("/predict", json=f) for f in asked]
        state = client.post("/admin/candidate", headers=ADMIN, json={"version": versions["v2"], "mode": "shadow"})
        assert state.status_code == 200, state.text
        shadowed = [client.post("/predict", json={**f, "request_id": f"s{i}"}) for i, f in enumerate(asked)]
        batch = client.post("/predict/batch", json=asked)
        health, version = client.get("/health").json(), client.get("/version").json()
        wait_until(lambda: rollout(client)["counts"]["shadow_scored"] == 40, what="the shadow to score all rows")
        counts = rollout(client)["counts"]

    # the answers are exactly production's, whether a shadow is loaded or not
    assert [without_request_id(r.json()) for r in shadowed] == [without_request_id(r.json()) for r in alone]
    assert [without_request_id(p) for p in batch.json()["predictions"]] == [without_request_id(r.json()) for r in alone]
    for resp in [*shadowed, batch]:
        assert f'"{versions["v2"]}"' not in resp.text and versions["v2"] not in resp.headers.values()
    assert health["rollout"] == "shadow" and health["canary_version"] is None
    # No field names the shadow's version (a substring test would find its "2" in a count of 72 rows).
    assert versions["v2"] not in {str(v) for v in health.values()}
    assert version["version"] == versions["v1"]
    assert (counts["main_answered"], counts["shadow_scored"], counts["shadow_dropped"]) == (40, 40, 0)

    store = storage.get()
    shadow_log = _read_all(store, version_url(versions["v2"], role=SHADOW))
    main_log = _read_all(store, version_url(versions["v1"]))
    assert set(shadow_log[ROLE]) == {SHADOW} and set(main_log[ROLE]) == {MAIN}
    assert set(shadow_log["model_version"]) == {versions["v2"]}
    assert _read_all(store, version_url(versions["v2"])).empty  # nothing where monitoring would read v2's traffic
    paired = shadow_log.merge(main_log, on="request_id", suffixes=("_shadow", "_main"))
    assert {f"s{i}" for i in range(20)} <= set(paired["request_id"])
    assert (paired["probability_shadow"] != paired["probability_main"]).any()  # two different models
    assert shadow_log["model_ms"].notna().all() and main_log["model_ms"].notna().all()
    assert shadow_log["baseline_ms"].notna().all()  # production timed beside the shadow on the same rows


def _read_all(store, url: str):
    import pandas as pd

    files = [f["url"] for f in store.list_files(url) if f["url"].endswith(".parquet")]
    return pd.concat([store.read_parquet(u) for u in files], ignore_index=True) if files else pd.DataFrame()


def test_a_slow_shadow_drops_and_counts_and_never_slows_a_response(serve, versions, monkeypatch):
    import serving.service
    from shadow_doubles import Slow

    serve(MLOPS_SHADOW_QUEUE_SIZE="2")
    load_version = serving.service.load_version

    def load_slow(*args, **kwargs):  # the candidate's worker process gets the slow estimator
        model = load_version(*args, **kwargs)
        slow = model.alias == model_registry.CANDIDATE
        return dataclasses.replace(model, estimator=Slow(model.estimator)) if slow else model

    monkeypatch.setattr(serving.service, "load_version", load_slow)
    with app_client() as client:
        wait_serving(client, versions["v1"])
        assert client.post("/admin/candidate", headers=ADMIN,
                           json={"version": versions["v2"], "mode": "shadow"}).status_code == 200
        took = []
        for f in flights(12):
            started = time.perf_counter()
            assert client.post("/predict", json=f).status_code == 200
            took.append(time.perf_counter() - started)
        counts = rollout(client)["counts"]
    assert max(took) < 0.3, took  # no response waited for the shadow
    assert counts["main_answered"] == 12 and counts["shadow_dropped"] >= 5
    assert counts["shadow_dropped"] + counts["shadow_scored"] <= 12


def test_a_canary_answers_its_share_by_flight_and_says_which_version_answered(serve, versions):
    import storage
    from serving.inference_log import CANARY, ROLE, version_url
    from serving.service import in_canary

    serve()
    asked = flights(200)
    with app_client() as client:
        wait_serving(client, versions["v1"])
        resp = client.post("/admin/candidate", headers=ADMIN,
                           json={"version": versions["v2"], "mode": "canary", "share": 0.3})
        assert resp.status_code == 200 and resp.json()["share"] == 0.3
        first = [client.post("/predict", json=f).json() for f in asked]
        again = [client.post("/predict", json=f).json() for f in asked[:50]]
        batch = client.post("/predict/batch", json=asked[:50]).json()
        health = client.get("/health").json()
        counts = rollout(client)["counts"]

    by_version = {a["flight_id"]: a["model_version"] for a in first}
    assert set(by_version.values()) == {versions["v1"], versions["v2"]}
    for a in first:
        assert a["model_version"] == (versions["v2"] if in_canary(a["flight_id"], 0.3) else versions["v1"])
    share = sum(v == versions["v2"] for v in by_version.values()) / len(by_version)
    assert 0.18 < share < 0.42, share
    assert [a["model_version"] for a in again] == [by_version[a["flight_id"]] for a in again]
    assert [p["model_version"] for p in batch["predictions"]] == [by_version[p["flight_id"]] for p in batch["predictions"]]
    assert batch["model_version"] == versions["v1"]
    assert health["rollout"] == "canary" and health["canary_version"] == versions["v2"]
    answered_by_canary = sum(a["model_version"] == versions["v2"] for a in first + again + batch["predictions"])
    assert counts["canary_answered"] == answered_by_canary and counts["canary_errors"] == 0
    assert counts["main_answered"] == 300 - answered_by_canary

    store = storage.get()
    canary_log = _read_all(store, version_url(versions["v2"], role=CANARY))
    assert len(canary_log) == answered_by_canary and set(canary_log[ROLE]) == {CANARY}
    assert _read_all(store, version_url(versions["v2"])).empty


def test_promotion_needs_the_alias_and_then_serves_the_candidate_to_everyone(serve, versions, mlflow_server):
    serve()
    with app_client() as client:
        wait_serving(client, versions["v1"])
        assert client.post("/admin/candidate", headers=ADMIN,
                           json={"version": versions["v1"], "mode": "shadow"}).status_code == 409  # production
        assert client.post("/admin/candidate", headers=ADMIN,
                           json={"version": versions["v2"], "mode": "canary"}).status_code == 200
        assert rollout(client)["share"] == 0.1  # MLOPS_CANARY_SHARE's default
        early = client.post("/admin/promote", headers=ADMIN, json={"version": versions["v2"]})
        assert early.status_code == 409 and "move it first" in early.text
        model_registry.point_alias(model_registry.client(mlflow_server), versions["name"],
                                   model_registry.PRODUCTION, versions["v2"])
        promoted = client.post("/admin/promote", headers=ADMIN, json={"version": versions["v2"]})
        answers = [client.post("/predict", json=f).json()["model_version"] for f in flights(30)]
        state, version = rollout(client), client.get("/version").json()
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["version"] == versions["v2"] and promoted.json()["previous_version"] == versions["v1"]
    assert set(answers) == {versions["v2"]}
    assert state["candidate_version"] is None and state["production_version"] == versions["v2"]
    assert (version["version"], version["alias"]) == (versions["v2"], model_registry.PRODUCTION)


def test_removing_the_candidate_leaves_production_answering_everything(serve, versions):
    serve()
    with app_client() as client:
        wait_serving(client, versions["v1"])
        assert client.post("/admin/candidate", headers=ADMIN,
                           json={"version": versions["v2"], "mode": "canary", "share": 1.0}).status_code == 200
        during = {client.post("/predict", json=f).json()["model_version"] for f in flights(10)}
        removed = client.delete("/admin/candidate", headers=ADMIN)
        after = {client.post("/predict", json=f).json()["model_version"] for f in flights(10)}
        health = client.get("/health").json()
    assert during == {versions["v2"]}
    assert removed.status_code == 200 and removed.json()["candidate_version"] == versions["v2"]
    assert after == {versions["v1"]} and health["rollout"] is None


def test_canary_routing_is_a_stable_hash():
    from serving.service import in_canary

    ids = [f"UA{i}-EWR-201307011200" for i in range(20_000)]
    share = sum(in_canary(i, 0.1) for i in ids) / len(ids)
    assert 0.09 < share < 0.11
    assert [in_canary(i, 0.1) for i in ids[:100]] == [in_canary(i, 0.1) for i in ids[:100]]
    assert all(in_canary(i, 0.2) for i in ids if in_canary(i, 0.1))  # a larger share keeps the smaller one's flights
    assert not any(in_canary(i, 0.0) for i in ids[:100]) and all(in_canary(i, 1.0) for i in ids[:100])


def test_a_canary_that_fails_is_counted_and_production_answers_its_flights(serve, versions):
    serve()

    class Raises:
        def predict_proba(self, x):
            raise RuntimeError("broken on purpose")

    with app_client() as client:
        wait_serving(client, versions["v1"])
        assert client.post("/admin/candidate", headers=ADMIN,
                           json={"version": versions["v2"], "mode": "canary", "share": 1.0}).status_code == 200
        service = client.app.state.service
        candidate = service.candidate
        service.candidate = dataclasses.replace(
            candidate, model=dataclasses.replace(candidate.model, estimator=Raises(), array_input=False))
        answers = [client.post("/predict", json=f) for f in flights(5)]
        counts = rollout(client)["counts"]
    assert [a.status_code for a in answers] == [200] * 5
    assert {a.json()["model_version"] for a in answers} == {versions["v1"]}
    assert (counts["canary_errors"], counts["canary_answered"], counts["main_answered"]) == (5, 0, 5)


def test_removing_a_shadow_stops_its_worker_after_writing_every_row(serve, versions):
    import storage
    from serving.inference_log import SHADOW, version_url

    serve()
    with app_client() as client:
        wait_serving(client, versions["v1"])
        assert client.post("/admin/candidate", headers=ADMIN,
                           json={"version": versions["v2"], "mode": "shadow"}).status_code == 200
        worker = client.app.state.service.candidate.shadow
        assert worker.alive and worker.process.pid != __import__("os").getpid()
        for i, f in enumerate(flights(15)):
            assert client.post("/predict", json={**f, "request_id": f"r{i}"}).status_code == 200
        removed = client.delete("/admin/candidate", headers=ADMIN)
        assert removed.status_code == 200
        wait_until(lambda: worker.finished, what="the shadow worker to stop")
        # written by the worker as it stopped, while the server goes on (its own flush is an hour away)
        shadow_log = _read_all(storage.get(), version_url(versions["v2"], role=SHADOW))
        assert client.post("/predict", json=FLIGHT).status_code == 200
    assert not worker.process.is_alive() and worker.process.exitcode == 0
    assert sorted(shadow_log["request_id"]) == sorted(f"r{i}" for i in range(15))
    assert worker.counts.shadow_scored == 15 and worker.counts.shadow_errors == 0


def test_a_shadow_worker_that_dies_counts_errors_and_the_server_goes_on(serve, versions):
    import os
    import signal

    serve()
    with app_client() as client:
        wait_serving(client, versions["v1"])
        assert client.post("/admin/candidate", headers=ADMIN,
                           json={"version": versions["v2"], "mode": "shadow"}).status_code == 200
        worker = client.app.state.service.candidate.shadow
        for f in flights(5):
            assert client.post("/predict", json=f).status_code == 200
        wait_until(lambda: rollout(client)["counts"]["shadow_scored"] == 5, what="the shadow to score 5 rows")
        os.kill(worker.process.pid, signal.SIGKILL)
        wait_until(lambda: not worker.alive, what="the server to see the worker gone")
        answers = [client.post("/predict", json=f) for f in flights(7, start=300)]
        counts = rollout(client)["counts"]
        health = client.get("/health").json()
        # the slot can be set again: a new worker
        assert client.post("/admin/candidate", headers=ADMIN,
                           json={"version": versions["v2"], "mode": "shadow"}).status_code == 200
        assert client.post("/predict", json=FLIGHT).status_code == 200
        wait_until(lambda: rollout(client)["counts"]["shadow_scored"] == 1, what="the new worker to score")
    assert [a.status_code for a in answers] == [200] * 7
    assert {a.json()["model_version"] for a in answers} == {versions["v1"]}
    assert (counts["main_answered"], counts["shadow_scored"], counts["shadow_errors"]) == (12, 5, 7)
    assert health["ready"] and health["rollout"] == "shadow"


def test_a_shadow_counts_its_pending_rows_itself_where_the_platform_cannot_count_its_queue():
    """macOS has no sem_getvalue, so `Queue.qsize` raises there: the admin status must still say how many
    rows the shadow has not scored yet, and none once its process is gone."""
    import threading

    from datetime import datetime, timezone

    import numpy as np

    from serving.service import RolloutCounts
    from serving.shadow_worker import ShadowWorker

    class Queue:
        def __init__(self):
            self.jobs = []

        def put_nowait(self, job):
            self.jobs.append(job)

        def qsize(self):
            raise NotImplementedError

    worker = ShadowWorker.__new__(ShadowWorker)
    worker._jobs, worker._lock, worker.counts = Queue(), threading.Lock(), RolloutCounts()
    worker._closing = worker._dead = False
    worker._submitted = worker._reported = 0
    now = datetime.now(timezone.utc)
    worker.submit([("UA", 1)] * 3, np.zeros((3, 2)), [{}] * 3, [now] * 3, now)
    worker.submit([("UA", 2)] * 2, np.zeros((2, 2)), [{}] * 2, [now] * 2, now)
    assert worker.pending == 5 and len(worker._jobs.jobs) == 2
    worker._reported = 3  # the process reported the first request's rows
    assert worker.pending == 2
    worker._dead = True  # gone: what it never reported is counted as errors, not pending
    assert worker.pending == 0
