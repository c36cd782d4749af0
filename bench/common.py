"""What several benchmarks do the same way: a throwaway MLOPS_HOME, months ingested through the real
pipeline, and a measurement run in a temporary home whose result is saved under bench/results."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
STORAGE_VARS = ("MLOPS_STORAGE_URL", "MLOPS_FEAST_REGISTRY", "MLOPS_FEAST_ONLINE_STORE", "MLOPS_FEAST_OFFLINE_DIR")


def stack_addresses(home: Path) -> dict[str, str]:
    """The environment of a stack of the bench's own: its home, and every service on a free loopback port."""
    from tests.support import free_port

    return {
        "PYTHONPATH": str(REPO), "MLOPS_HOME": str(home),
        "MLOPS_AIRFLOW_URL": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MLOPS_MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}",
        "MLOPS_EVIDENTLY_PORT": str(free_port()),
    }


def embedded_home(prefix: str) -> str:
    """A new temporary MLOPS_HOME for this process, with the embedded stack's storage (local files)."""
    home = tempfile.mkdtemp(prefix=prefix)
    os.environ["MLOPS_HOME"] = home
    for var in STORAGE_VARS:
        os.environ.pop(var, None)
    import settings

    settings.get.cache_clear()
    return home


def ingest_months(months: list[str]):
    """(the offline store's flights, one row per flight; seconds taken): each month's sample files ingested
    as dataops ingests a landing batch, then the feature store applied."""
    from features import ingest, samples, tasks
    from features.store import FLIGHTS_TABLE, feature_store, read_offline_table

    t0 = time.perf_counter()
    samples.export()
    for month in months:
        tasks.write_features(ingest.Batch(f"bench-{month}").ingest(samples.drop(month)))
    feature_store(apply=True)
    flights = read_offline_table(FLIGHTS_TABLE).drop_duplicates("flight_id", keep="last")
    return flights, time.perf_counter() - t0


def measure_in_temp_home(measure, args, prefix: str, result_file: str) -> dict:
    """`measure(args, home)` in a temporary home (kept with `args.keep`), the environment restored after;
    the result is written to bench/results/`result_file`."""
    saved_env = dict(os.environ)
    home = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        result = measure(args, home)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        if args.keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / result_file).write_text(json.dumps(result, indent=2))
    return result
