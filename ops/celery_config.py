"""Airflow's Celery settings, and warm workers: the task libraries imported once per worker.

Named by `[celery] celery_config_options = ops.celery_config.CELERY_CONFIG` (ops/stack.py,
docker-compose.yaml). The configuration itself is the provider's default, unchanged.

How a Celery worker of Airflow 3.3 runs a task: `airflow celery worker` starts Celery's
prefork pool; a pool process receives the `execute_workload` message and becomes the task's
supervisor (`BaseExecutor.run_workload` -> `supervise_task`), which `os.fork()`s the task
process. So whatever the worker's main process has imported before the pool forks is
inherited by every pool process and, through the supervisor's fork, by every task process:
the same effect as `ops.preload_executor.PreloadingLocalExecutor` in the scheduler.

`worker_init` fires in the worker's main process before the pool starts; the handler
imports `ops.preload_executor.PRELOAD` there (MLOPS_PRELOAD_TASK_LIBRARIES=false turns it
off, as for the LocalExecutor).
"""

from __future__ import annotations

import importlib
import logging
import time

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

log = logging.getLogger(__name__)

CELERY_CONFIG = dict(DEFAULT_CELERY_CONFIG)

# What the last preload did in this process: read by tests through the worker's log line.
PRELOADED: dict[str, float] = {}


def preload() -> tuple[int, float]:
    """Import the task libraries now. Returns (modules imported, seconds)."""
    from ops.preload_executor import PRELOAD

    started = time.monotonic()
    done = 0
    for name in PRELOAD:
        try:
            importlib.import_module(name)
            done += 1
        except Exception:  # a missing optional library must not stop the worker
            log.exception("could not preload %s", name)
    return done, time.monotonic() - started


@worker_init.connect
def _preload_before_the_pool_forks(**_kwargs) -> None:
    import settings

    if not settings.get().preload_task_libraries:
        log.warning("mlops: task libraries not preloaded (MLOPS_PRELOAD_TASK_LIBRARIES=false)")
        return
    done, seconds = preload()
    PRELOADED.update(modules=done, seconds=seconds)
    # One line in the worker's log, found by tests/integration/test_celery_workers.py.
    log.warning("mlops: preloaded %d task libraries in the worker before the pool forks, in %.1fs", done, seconds)
