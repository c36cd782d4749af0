"""The serving DAG's logic with a real MLflow server and the real model server on a port."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from serving_helpers import FLIGHT, LiveServer, free_port, unique_name

import model_registry
from serving import registry
from serving import tasks as deploy_tasks
from serving.sensor import ServerVersionTrigger


@pytest.fixture(scope="module")
def versions(register) -> dict:
    name = unique_name("deploy")
    return {"name": name, "v1": register(name, "good"), "v2": register(name, "other")}


@pytest.fixture
def live(serving_env, versions, mlflow_server):
    """The model server on a free port; production and previous cleared first. Yields the settings."""
    mlflow_client = model_registry.client(mlflow_server)
    for alias in (model_registry.PRODUCTION, model_registry.PREVIOUS):
        model_registry.point_alias(mlflow_client, versions["name"], alias, None)
    cfg = serving_env(versions["name"], MLOPS_MODEL_SERVER_URL=f"http://127.0.0.1:{free_port()}",
                      MLOPS_DEPLOY_TIMEOUT_SECONDS="20")
    with LiveServer(int(cfg.model_server_url.rsplit(":", 1)[1])):
        yield cfg


def aliases(mlflow_server, name) -> tuple[str | None, str | None]:
    mlflow_client = model_registry.client(mlflow_server)
    return (model_registry.alias_version(mlflow_client.tracking_uri, name, model_registry.PRODUCTION),
            model_registry.alias_version(mlflow_client.tracking_uri, name, model_registry.PREVIOUS))


def server_version(cfg) -> str | None:
    from serving.client import ServerClient

    return ServerClient(cfg.model_server_url).version()


def wait_for(cfg, version: str) -> dict:
    """What the deferrable sensor's trigger reports for `version`."""
    trigger = ServerVersionTrigger(cfg.model_server_url, version, time.time() + cfg.deploy_timeout_seconds, 0.2)

    async def first_event():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first_event())


def deploy_fully(cfg, version: str) -> dict:
    """The DAG's happy path, step by step."""
    validation = deploy_tasks.validate(version, cfg)
    promotion = deploy_tasks.promote(version, cfg)
    deploy_tasks.reload_server(version, cfg)
    assert wait_for(cfg, version)["status"] == "ok"
    smoke = deploy_tasks.smoke_test(version, cfg)
    return deploy_tasks.publish(promotion, validation, smoke)


def test_the_newest_named_version_is_chosen_and_production_is_not_redeployed(serving_env, versions, mlflow_server):
    cfg = serving_env(versions["name"])
    model_registry.point_alias(model_registry.client(mlflow_server), versions["name"], model_registry.PRODUCTION, None)
    events = [{"model_name": versions["name"], "version": versions["v1"]},
              {"model_name": versions["name"], "version": versions["v2"]},
              {"model_name": "some_other_model", "version": "99"}]

    assert deploy_tasks.versions_named(events, None, versions["name"]) == [versions["v2"], versions["v1"]]
    assert deploy_tasks.choose_version(events, cfg=cfg)[0] == versions["v2"]
    assert deploy_tasks.choose_version([], ["1"], cfg=cfg)[0] == "1"
    assert deploy_tasks.choose_version([], cfg=cfg) == (None, f"the triggering events name no version of {versions['name']}")

    model_registry.point_alias(model_registry.client(mlflow_server), versions["name"], model_registry.PRODUCTION, versions["v2"])
    chosen, why = deploy_tasks.choose_version(events, cfg=cfg)
    assert chosen is None and f"already serves version {versions['v2']}" in why


def test_deploy_then_forced_smoke_failure_rolls_back_to_the_previous_version(live, versions, mlflow_server):
    name, v1, v2 = versions["name"], versions["v1"], versions["v2"]
    first = deploy_fully(live, v1)
    assert first["version"] == v1 and first["previous_version"] is None
    assert first["smoke"]["requests"] == deploy_tasks.SMOKE_FLIGHTS + 1
    assert aliases(mlflow_server, name) == (v1, None)

    promotion = deploy_tasks.promote(v2, live)
    assert promotion["previous_version"] == v1
    assert aliases(mlflow_server, name) == (v2, v1)
    deploy_tasks.reload_server(v2, live)
    assert wait_for(live, v2)["status"] == "ok"
    with pytest.raises(deploy_tasks.DeployFailed, match="smoke test of version .* answered 422") as failure:
        deploy_tasks.smoke_test(v2, live, payloads=[{**FLIGHT, "distance": -1}])  # forced failure

    outcome = deploy_tasks.rollback(promotion, str(failure.value), live)

    assert outcome["production"] == v1 and outcome["server"] == f"serving {v1}"
    assert aliases(mlflow_server, name) == (v1, None)
    assert server_version(live) == v1
    tags = model_registry.version_tags(model_registry.client(mlflow_server), name, v2)
    assert "answered 422" in tags["rollback_reason"] and tags["rolled_back_at"] == tags["retired_at"]
    history = registry.deployment_history(model_registry.client(mlflow_server), name)
    assert [(h["version"], h["retired_at"] is None) for h in history] == [(v1, False), (v2, False), (v1, True)]
    assert history[0]["retired_at"] == history[1]["deployed_at"]
    assert history[1]["retired_at"] == history[2]["deployed_at"]


def test_promote_is_idempotent(live, versions, mlflow_server):
    first = deploy_tasks.promote(versions["v1"], live)
    again = deploy_tasks.promote(versions["v1"], live)
    assert again == first
    history = json.loads(model_registry.version_tags(model_registry.client(mlflow_server), versions["name"],
                                               versions["v1"])["serving_history"])
    assert history[-1][1] is None and len([h for h in history if h[1] is None]) == 1


def test_rolling_back_a_first_deployment_leaves_no_production_model(live, versions, mlflow_server):
    promotion = deploy_tasks.promote(versions["v2"], live)
    deploy_tasks.reload_server(versions["v2"], live)
    assert server_version(live) == versions["v2"]

    outcome = deploy_tasks.rollback(promotion, "test: smoke failed", live)

    assert outcome["production"] is None
    assert aliases(mlflow_server, versions["name"]) == (None, None)
    assert server_version(live) is None  # the server answers 503: nothing to serve


def test_the_trigger_times_out_naming_what_the_server_reports(live, versions, mlflow_server):
    model_registry.point_alias(model_registry.client(mlflow_server), versions["name"], model_registry.PRODUCTION, versions["v1"])
    deploy_tasks.reload_server(versions["v1"], live)
    trigger = ServerVersionTrigger(live.model_server_url, versions["v2"], time.time() + 1.0, 0.2)

    async def first_event():
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(first_event())
    assert event["status"] == "timeout" and event["last_seen"] == versions["v1"]


def test_reload_against_a_missing_server_fails_loudly(serving_env, versions):
    cfg = serving_env(versions["name"], MLOPS_MODEL_SERVER_URL=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Exception, match="[Cc]onnect"):
        deploy_tasks.reload_server(versions["v1"], cfg)


def test_the_sensor_defers_only_while_the_server_serves_another_version(live, versions, mlflow_server):
    from airflow.sdk.exceptions import TaskDeferred

    from serving.sensor import ServerVersionSensor

    model_registry.point_alias(model_registry.client(mlflow_server), versions["name"], model_registry.PRODUCTION, versions["v1"])
    deploy_tasks.reload_server(versions["v1"], live)

    def sensor(version):
        return ServerVersionSensor(task_id="wait_for_server", promotion={"version": version},
                                   server_url=live.model_server_url, deploy_timeout_seconds=5)

    served = sensor(versions["v1"]).execute({})
    assert served["status"] == "ok" and served["version"] == versions["v1"]
    with pytest.raises(TaskDeferred) as deferred:
        sensor(versions["v2"]).execute({})
    assert deferred.value.trigger.version == versions["v2"]
