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
    # The libraries, with the submodules the stages reach only when they run: the duckdb
    # offline store pulls in ibis and sqlglot, MLflow runs pull in GitPython and tracing.
    "pandas",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.impute",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.metrics",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.pyfunc",
    "mlflow.tracing",
    # Registries that scan the installed packages' entry points when first imported (0.4 s each).
    "mlflow.tracking.request_header.registry",
    "mlflow.tracking.request_auth.registry",
    "mlflow.tracking.context.registry",
    "mlflow.tracking.default_experiment.registry",
    "mlflow.tracking._tracking_service.utils",
    "mlflow.tracking._model_registry.utils",
    "mlflow.store.artifact.artifact_repository_registry",
    "git",
    "feast",
    "feast.infra.passthrough_provider",
    "feast.infra.offline_stores.duckdb",
    "feast.infra.online_stores.sqlite",
    "feast.infra.online_stores.postgres_online_store.postgres",
    "feast.infra.online_stores.redis",
    "ibis.backends.duckdb",
    "evidently",
    "evidently.presets",
    # The stage modules the tasks call (they read only the environment at import).
    "features.ingest",
    "features.tasks",
    "training.tasks",
    "training.dataset",
    "serving.tasks",
    "serving.validation",
    "monitoring.tasks",
    "monitoring.report",
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
