"""The preloading executor's module list: a renamed module would only be logged by the scheduler."""

from __future__ import annotations

import importlib.util

import pytest

from ops.preload_executor import PRELOAD


@pytest.mark.parametrize("name", PRELOAD)
def test_every_preloaded_module_is_importable(name):
    assert importlib.util.find_spec(name) is not None


def test_the_local_stack_runs_the_preloading_executor_by_default(monkeypatch, tmp_path):
    import settings
    from ops import stack

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.delenv("MLOPS_PRELOAD_TASK_LIBRARIES", raising=False)
    env = stack.airflow_env(settings.load())
    assert env["AIRFLOW__CORE__EXECUTOR"] == "ops.preload_executor.PreloadingLocalExecutor"
    monkeypatch.setenv("MLOPS_PRELOAD_TASK_LIBRARIES", "false")
    assert stack.airflow_env(settings.load())["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
