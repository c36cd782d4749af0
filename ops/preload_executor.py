"""A LocalExecutor that imports the stages' heavy libraries once, before it forks.

On Linux the LocalExecutor forks its worker processes from the scheduler, and each
worker forks a fresh process per task. Every task of this project imports some of
pandas, pyarrow, scikit-learn, MLflow, Feast and Evidently (5-10 s on this class of
machine). Imported here, in the scheduler, before the workers are forked, they are
inherited by every task process instead of being imported again by each one.

Enabled in the local stack by `[core] executor = ops.preload_executor.PreloadingLocalExecutor`
(see ops/stack.py); docs/benchmarks.md has the before/after numbers.
"""

from __future__ import annotations

import importlib
import time

from airflow.executors.local_executor import LocalExecutor

PRELOAD = (
    "pandas",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.metrics",
    "mlflow",
    "mlflow.sklearn",
    "feast",
    "evidently",
    "evidently.presets",
)


class PreloadingLocalExecutor(LocalExecutor):
    def start(self) -> None:
        started = time.monotonic()
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except Exception:  # a missing optional library must not stop the scheduler
                self.log.exception("could not preload %s", name)
        self.log.info("preloaded %d libraries for task processes in %.1fs", len(PRELOAD), time.monotonic() - started)
        super().start()
