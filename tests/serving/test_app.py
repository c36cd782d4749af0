"""The model server's API in-process, with real registered versions and the real Feast repo."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest
from serving_helpers import (
    ADMIN,
    FLIGHT,
    app_client,
    unique_name,
    wait_serving,
    wait_until,
)

import model_registry


@pytest.fixture(scope="module")
def versions(register) -> dict:
    name = unique_name("api")
    return {"name": name, "v1": register(name, "good"), "v2": register(name, "other"),
            "broken": register(name, "raising_pyfunc"), "wrong": register(name, "wrong_features")}


@pytest.fixture
def serve(serving_env, versions, mlflow_server):
    """serve(version, **env): production -> version, settings for the server; returns the settings."""

    def apply(version: str | None, **env):
        cfg = serving_env(versions["name"], **env)
        model_registry.point_alias(model_registry.client(mlflow_server), versions["name"], model_registry.PRODUCTION, version)
        return cfg

    return apply


def set_production(versions, mlflow_server, version):
    model_registry.point_alias(model_registry.client(mlflow_server), versions["name"], model_registry.PRODUCTION, version)


# -- predict -------------------------------------------------------------------------------
def test_predict_answers_with_probability_decision_and_version(serve, versions):
    serve(versions["v1"])
    with app_client() as client:
        wait_serving(client, versions["v1"])
        resp = client.post("/predict", json=FLIGHT)

    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert 0.0 <= body["probability"] <= 1.0
    assert body["prediction"] == int(body["probability"] >= body["threshold"])
    assert body["decision"] == ("late" if body["prediction"] else "on_time")
    assert body["threshold"] == 0.3
    assert (body["model_name"], body["model_version"]) == (versions["name"], versions["v1"])
    assert body["flight_id"] == "UA1545-EWR-201303301415"
    assert body["unknown_entities"] == []


def test_predict_equals_the_model_on_feasts_own_online_features(serve, versions, estimators):
    """End to end the server gives what training's functions and Feast's public API give, as of the request.

    Feast's `get_online_features` returns the latest values with their timestamps; the
    as-of rule (known by `as_of`, not older than the view's TTL) is applied here
    independently of the server's own code.
    """
    from features import repo
    from features.compute import model_frame, request_features
    from features.names import FEATURE_SERVICE
    from features.store import feature_store

    serve(versions["v1"])
    with app_client() as client:
        wait_serving(client, versions["v1"])
        answer = client.post("/predict", json=FLIGHT).json()

    store = feature_store()
    online = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[{"origin": "EWR", "tailnum": "N14228", "carrier": "UA", "route": "EWR-IAH"}],
    ).to_dict(include_event_timestamps=True)
    as_of = pd.Timestamp(FLIGHT["as_of"]).timestamp()
    stale = []
    for view in repo.FEATURE_VIEWS:
        ttl = view.ttl.total_seconds() or float("inf")
        for feature in view.features:
            stamp = online[f"{feature.name}__ts"][0]
            if not stamp <= as_of <= stamp + ttl:
                online[feature.name] = [None]
                stale.append(view.name)
    request = request_features(pd.Series([pd.Timestamp(FLIGHT["sched_dep_ts"])]), pd.Series([FLIGHT["distance"]]))
    frame = model_frame(pd.concat([pd.DataFrame({k: v for k, v in online.items() if not k.endswith("__ts")}),
                                   request], axis=1))
    assert sorted(answer["stale_views"]) == sorted(set(stale))
    assert "weather_hourly" not in stale  # observed at 03:51Z, within its 3 h TTL as of 05:00Z
    assert answer["probability"] == pytest.approx(estimators["good"].predict_proba(frame)[0, 1], abs=1e-12)


def test_batch_predict_answers_in_order_with_one_model(serve, versions):
    serve(versions["v1"])
    flights = [FLIGHT, {**FLIGHT, "flight": 7, "origin": "JFK", "dest": "LAX", "distance": 2475, "tailnum": None},
               {**FLIGHT, "request_id": "mine-1"}]
    with app_client() as client:
        wait_serving(client, versions["v1"])
        single = client.post("/predict", json=FLIGHT).json()
        resp = client.post("/predict/batch", json=flights)

    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_version"] == versions["v1"]
    answers = body["predictions"]
    assert [a["flight_id"] for a in answers] == ["UA1545-EWR-201303301415", "UA7-JFK-201303301415",
                                                 "UA1545-EWR-201303301415"]
    assert answers[0]["probability"] == pytest.approx(single["probability"], abs=1e-12)
    assert answers[1]["unknown_entities"] == ["tailnum"]
    assert answers[2]["request_id"] == "mine-1"


def test_unknown_entities_are_flagged_and_answered(serve, versions):
    serve(versions["v1"])
    with app_client() as client:
        wait_serving(client, versions["v1"])
        resp = client.post("/predict", json={**FLIGHT, "origin": "ZZZ", "carrier": "Q9", "tailnum": "N00000"})

    assert resp.status_code == 200, resp.text
    assert resp.json()["unknown_entities"] == ["origin", "tailnum", "carrier", "route"]
    assert 0.0 <= resp.json()["probability"] <= 1.0


@pytest.mark.parametrize("change, field, message", [
    ({"sched_dep_ts": "2013-03-30T14:15:00"}, "sched_dep_ts", "timezone"),
    ({"distance": -5}, "distance", "greater than 0"),
    ({"distance": "far"}, "distance", "valid number"),
    ({"origin": "NEWARK"}, "origin", "pattern"),
    ({"carrier": None}, "carrier", "valid string"),
    ({"flight": 0}, "flight", "greater than or equal to 1"),
    ({"gate": "B12"}, "gate", "Extra inputs are not permitted"),
])
def test_bad_payloads_get_422_naming_the_field(serve, versions, change, field, message):
    serve(versions["v1"])
    with app_client() as client:
        resp = client.post("/predict", json={**FLIGHT, **change})
    assert resp.status_code == 422
    assert field in resp.json()["message"] and message in resp.json()["message"]


def test_missing_fields_empty_and_oversized_batches_get_422(serve, versions):
    serve(versions["v1"])
    without_dest = {k: v for k, v in FLIGHT.items() if k != "dest"}
    with app_client() as client:
        missing = client.post("/predict", json=without_dest)
        not_json = client.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"})
        empty = client.post("/predict/batch", json=[])
        oversized = client.post("/predict/batch", json=[FLIGHT] * 1001)
        bad_item = client.post("/predict/batch", json=[FLIGHT, {**FLIGHT, "distance": 0}])

    assert missing.status_code == 422 and "dest: Field required" in missing.json()["message"]
    assert not_json.status_code == 422 and "JSON" in not_json.json()["message"]
    assert empty.status_code == 422 and "at least 1 item" in empty.json()["message"]
    assert oversized.status_code == 422 and "at most 1000 items" in oversized.json()["message"]
    assert bad_item.status_code == 422 and "1.distance" in bad_item.json()["message"]


# -- health, version, no model --------------------------------------------------------------
def test_health_and_version_describe_the_loaded_model(serve, versions):
    serve(versions["v1"])
    with app_client() as client:
        health = wait_serving(client, versions["v1"])
        version = client.get("/version").json()

    assert health["ready"] and health["features_ready"] and health["reason"] is None
    assert version["model_name"] == versions["name"] and version["version"] == versions["v1"]
    assert version["alias"] == model_registry.PRODUCTION and version["threshold"] == 0.3
    assert pd.Timestamp(version["loaded_at"]).tzinfo is not None


def test_without_a_production_model_health_answers_and_predict_is_503(serving_env):
    serving_env(unique_name("never_registered"))
    with app_client() as client:
        time.sleep(0.5)  # let the first poll find nothing
        health = client.get("/health")
        predict = client.post("/predict", json=FLIGHT)
        version = client.get("/version")

    assert health.status_code == 200 and health.json()["ready"] is False
    assert "no production model" in health.json()["reason"]
    assert predict.status_code == 503 and "no production model" in predict.json()["detail"]
    assert version.status_code == 503


# -- reload -----------------------------------------------------------------------------------
def test_admin_reload_needs_the_token(serve, versions):
    serve(versions["v1"])
    with app_client() as client:
        none = client.post("/admin/reload")
        wrong = client.post("/admin/reload", headers={"Authorization": "Bearer nope"})
    assert none.status_code == 401 and wrong.status_code == 401


def test_hot_reload_under_concurrent_requests_fails_no_request(serve, versions, mlflow_server):
    serve(versions["v1"])
    seen: list[list[tuple[int, str | None]]] = [[] for _ in range(4)]
    stop = threading.Event()
    with app_client() as client:
        wait_serving(client, versions["v1"])

        def hammer(out):
            while not stop.is_set():
                resp = client.post("/predict", json=FLIGHT)
                out.append((resp.status_code, resp.json().get("model_version")))

        threads = [threading.Thread(target=hammer, args=(out,)) for out in seen]
        for t in threads:
            t.start()
        wait_until(lambda: all(len(out) >= 5 for out in seen), what="requests on v1")
        set_production(versions, mlflow_server, versions["v2"])
        reload = client.post("/admin/reload", headers=ADMIN)
        counts = [len(out) for out in seen]
        wait_until(lambda: all(len(out) >= c + 5 for out, c in zip(seen, counts)), what="requests on v2")
        stop.set()
        for t in threads:
            t.join()

    assert reload.status_code == 200, reload.text
    assert reload.json() == {"model_name": versions["name"], "version": versions["v2"],
                             "previous_version": versions["v1"], "changed": True}
    for out in seen:
        assert all(code == 200 for code, _ in out)
        order = [v for _, v in out]
        switch = order.index(versions["v2"])  # once on v2, never back on v1
        assert set(order[:switch]) == {versions["v1"]} and set(order[switch:]) == {versions["v2"]}


def test_a_version_that_fails_to_load_is_never_swapped_in(serve, versions, mlflow_server):
    serve(versions["v1"])
    with app_client() as client:
        wait_serving(client, versions["v1"])
        for bad in (versions["broken"], versions["wrong"]):
            set_production(versions, mlflow_server, bad)
            resp = client.post("/admin/reload", headers=ADMIN)
            assert resp.status_code == 500
            assert f"still serving version {versions['v1']}" in resp.json()["detail"]
            assert client.get("/version").json()["version"] == versions["v1"]
            assert client.post("/predict", json=FLIGHT).json()["model_version"] == versions["v1"]
        health = client.get("/health").json()

    assert health["ready"] and health["model_version"] == versions["v1"]
    assert "cannot predict" in health["last_reload_error"]


def test_the_poll_follows_the_alias_without_being_told(serve, versions, mlflow_server):
    serve(versions["v1"], MLOPS_MODEL_POLL_SECONDS="0.3")
    with app_client() as client:
        wait_serving(client, versions["v1"])
        set_production(versions, mlflow_server, versions["v2"])
        wait_serving(client, versions["v2"])
        set_production(versions, mlflow_server, versions["broken"])
        time.sleep(1.0)  # a few polls: the broken version is never swapped in
        assert client.get("/version").json()["version"] == versions["v2"]


# -- inference log ------------------------------------------------------------------------------
def test_every_answer_is_in_the_inference_log_after_a_clean_stop(serve, versions):
    import storage
    from features.compute import MODEL_FEATURES
    from serving.inference_log import COLUMNS

    cfg = serve(versions["v1"])
    with app_client() as client:
        wait_serving(client, versions["v1"])
        singles = [client.post("/predict", json={**FLIGHT, "request_id": f"s{i}"}).json() for i in range(3)]
        batch = client.post("/predict/batch", json=[{**FLIGHT, "request_id": f"b{i}", "tailnum": None}
                                                    for i in range(4)]).json()
        client.post("/predict", json={**FLIGHT, "distance": -1})  # rejected: not an answer, not logged
        assert client.get("/health").json()["inference_log_pending"] == 7

    store = storage.get()
    files = store.list_files(store.url("inference", f"version={versions['v1']}"))
    log = pd.concat([store.read_parquet(f["url"]) for f in files], ignore_index=True)
    assert cfg.storage_url in files[0]["url"]
    assert list(log.columns) == COLUMNS
    assert sorted(log["request_id"]) == ["b0", "b1", "b2", "b3", "s0", "s1", "s2"]
    first = log.set_index("request_id").loc["s0"]
    assert first["probability"] == pytest.approx(singles[0]["probability"], abs=1e-12)
    assert first["prediction"] == singles[0]["prediction"] and first["model_version"] == versions["v1"]
    assert first["route"] == "EWR-IAH" and first["flight_id"] == singles[0]["flight_id"]
    assert first["sched_dep_ts"] == pd.Timestamp(FLIGHT["sched_dep_ts"])
    assert (first["distance"], first["dep_hour"], first["dep_dow"]) == (1400.0, 10.0, 5.0)  # Sat 10:15 EDT
    assert first["latency_ms"] > 0
    unplaned = log.set_index("request_id").loc["b0"]
    assert unplaned["probability"] == pytest.approx(batch["predictions"][0]["probability"], abs=1e-12)
    assert pd.isna(unplaned["tailnum"]) and pd.isna(unplaned["seats"]) and first["seats"] > 0
    assert first[MODEL_FEATURES].notna().sum() > len(MODEL_FEATURES) / 2


def test_admin_reload_also_picks_up_a_feature_service_registered_after_the_server_started(serve, versions, tmp_path):
    """On a fresh install the first deployment comes seconds after dataops registers the features."""
    import shutil

    import settings

    registered = settings.get().feast_registry
    late = tmp_path / "feast" / "registry.db"
    serve(versions["v1"], MLOPS_FEAST_REGISTRY=str(late))
    with app_client() as client:
        health = wait_until(lambda: (h := client.get("/health").json())["model_version"] == versions["v1"] and h,
                            what="the model to load")
        assert not health["features_ready"]
        assert client.post("/predict", json=FLIGHT).status_code == 503

        late.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(registered, late)  # what dataops' first batch does, as the server runs
        assert client.post("/admin/reload", headers=ADMIN).status_code == 200
        resp = client.post("/predict", json=FLIGHT)

    assert resp.status_code == 200, resp.text
