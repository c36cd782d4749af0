"""Batch work yields the CPU to the model server: the stack starts Airflow and MLflow at a lower priority."""

from __future__ import annotations

import os
import signal

import settings
from ops import stack


def niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[16])  # field 19 of proc(5), counted after the name


def test_airflow_and_mlflow_are_batch_the_model_server_is_not(home):
    batch = {s.name: s.batch for s in stack.services(settings.get())}
    assert batch.pop("model-server") is False
    assert batch and all(batch.values()), batch


def test_a_batch_service_starts_at_the_batch_niceness_and_its_children_inherit_it(home, monkeypatch):
    monkeypatch.setenv("MLOPS_BATCH_NICENESS", "7")
    settings.get.cache_clear()
    cfg = settings.get()
    for sub in ("run", "logs"):
        (cfg.home / sub).mkdir(parents=True, exist_ok=True)
    ours = os.nice(0)
    stack._start(cfg, stack.Service("batch-sleeper", ["sh", "-c", "sleep 30 & wait"], "", batch=True), dict(os.environ))
    stack._start(cfg, stack.Service("server-sleeper", ["sleep", "30"], ""), dict(os.environ))
    batch_pid, server_pid = stack.running_pid(cfg, "batch-sleeper"), stack.running_pid(cfg, "server-sleeper")
    try:
        assert niceness(server_pid) == ours
        assert niceness(batch_pid) == min(ours + 7, 19)
        children = [int(p) for p in open(f"/proc/{batch_pid}/task/{batch_pid}/children").read().split()]
        assert children and all(niceness(c) == min(ours + 7, 19) for c in children)
    finally:
        for pid in (batch_pid, server_pid):
            os.killpg(pid, signal.SIGKILL)
