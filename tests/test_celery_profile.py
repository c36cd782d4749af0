"""The celery profile's configuration, without starting it: executor, workers, queues,
what it owns in Postgres and Redis, Feast's Redis online store. The stack itself runs in
tests/e2e (the loop, a worker killed mid-task) and tests/integration."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import settings
from ops import stack

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def profile_env(pytestconfig):
    """tests/conftest.py's profile_env (other folders have a `conftest` module of their own)."""
    root = str(REPO / "tests" / "conftest.py")
    return next(p for p in pytestconfig.pluginmanager.get_plugins() if getattr(p, "__file__", None) == root).profile_env


@pytest.fixture
def celery_cfg(monkeypatch, tmp_path, profile_env) -> settings.Settings:
    for key, value in profile_env("celery", tmp_path).items():
        monkeypatch.setenv(key, value)
    return settings.load()


def test_celery_profile_runs_the_celery_executor_with_two_workers(celery_cfg):
    env = stack.airflow_env(celery_cfg)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://127.0.0.1:6379/")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql")
    assert env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == "ops.celery_config.CELERY_CONFIG"
    assert env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"] == celery_cfg.redis_key_prefix
    assert env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] == "30"
    workers = [s for s in stack.services(celery_cfg) if s.name.startswith("airflow-worker-")]
    assert [w.name for w in workers] == ["airflow-worker-1", "airflow-worker-2"]
    for i, w in enumerate(workers, 1):
        assert w.argv[1:4] == ["celery", "worker", "--queues"] and w.argv[4] == "default,training"
        assert stack.worker_name(celery_cfg, i) in w.argv
    # Everything in Postgres is named with the run's prefix, the result backend included.
    dbs = stack._postgres_databases(celery_cfg)
    assert len(dbs) == 4 and all(name.startswith(celery_cfg.db_prefix) for name in dbs)
    assert celery_cfg.db_prefix + "celery" in dbs


def test_other_profiles_keep_the_local_executor(monkeypatch, tmp_path, profile_env):
    for key, value in profile_env("prod", tmp_path).items():
        monkeypatch.setenv(key, value)
    cfg = settings.load()
    assert stack.airflow_env(cfg)["AIRFLOW__CORE__EXECUTOR"] == "ops.preload_executor.PreloadingLocalExecutor"
    assert not [s for s in stack.services(cfg) if s.name.startswith("airflow-worker")]


def test_feast_online_store_on_redis(celery_cfg):
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig

    from features.store import repo_config

    online = repo_config(celery_cfg).online_store
    assert isinstance(online, RedisOnlineStoreConfig)
    assert online.connection_string == "127.0.0.1:6379,db=6"


@pytest.mark.integration
def test_only_the_profile_s_own_redis_keys_are_deleted(celery_cfg):
    """On the machine's Redis: the stack's broker keys and its Feast project's rows go, a
    neighbour's keys in the same databases stay."""
    import redis

    broker = redis.Redis.from_url(celery_cfg.celery_broker_url)
    online = redis.Redis.from_url(celery_cfg.feast_online_store)
    mine = [(broker, f"{celery_cfg.redis_key_prefix}_kombu.binding.default"),
            (online, b"\x02\x00entity" + celery_cfg.feast_project.encode())]
    other = f"neighbour_{uuid.uuid4().hex}"
    theirs = [(broker, f"{other}:_kombu.binding.default"), (online, b"\x02\x00entity" + other.encode()),
              (broker, f"{other}-default")]
    try:
        for client, key in mine + theirs:
            client.set(key, "1")
        assert stack.drop_redis_keys(celery_cfg) == len(mine)
        assert [client.exists(key) for client, key in mine] == [0] * len(mine)
        assert [client.exists(key) for client, key in theirs] == [1] * len(theirs)
    finally:
        for client, key in mine + theirs:
            client.delete(key)


def test_training_tasks_go_to_the_training_queue():
    from airflow.dag_processing.dagbag import DagBag

    dags = DagBag(dag_folder=str(REPO / "dags")).dags
    queues = {dag_id: {t.queue for t in dag.tasks} for dag_id, dag in dags.items()}
    assert queues["training"] == {"training"}
    assert all(q == {"default"} for dag_id, q in queues.items() if dag_id != "training"), queues
    assert set(stack.CELERY_QUEUES) == {"default", "training"}
