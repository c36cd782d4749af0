"""The embedded local stack: Airflow's four components, MLflow, the model server and Evidently's UI.

    python -m ops.stack up      # start what is not running, wait until healthy
    python -m ops.stack down    # stop exactly what `up` started, by pid
    python -m ops.stack status
    python -m ops.stack clean   # after down: drop the databases and buckets this profile created

With Postgres URLs in the settings (the production-like profile, ops/profiles/prod.env),
`up` creates the databases it needs, all named with MLOPS_DB_PREFIX, and `clean` drops
only those. With MLOPS_LOCAL_S3_SERVER it also runs moto's S3-compatible server.
With MLOPS_CELERY_BROKER_URL (the distributed profile, ops/profiles/celery.env) Airflow runs
the CeleryExecutor and `up` starts MLOPS_CELERY_WORKERS Celery workers; `clean` also deletes
the Redis keys the profile owns (its broker keys, its Feast project's online rows).

Each service runs in its own process group; its pid is kept in
`.local/run/<name>.pid` and its output in `.local/logs/<name>.log`. `down`
signals the whole group, so no worker or child is left behind.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx

import settings
from settings import REPO_ROOT


@dataclass
class Service:
    name: str
    argv: list[str]
    health_url: str
    batch: bool = False  # runs at the stack's batch niceness, below the model server


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _port(url: str) -> int:
    return urlparse(url).port or 80


def airflow_env(cfg: settings.Settings) -> dict[str, str]:
    """The Airflow configuration of the local stack, as AIRFLOW__ variables."""
    home = cfg.home / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    secret_file = home / "jwt_secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(32))
        secret_file.chmod(0o600)
    port = _port(cfg.airflow_url)
    if cfg.celery_broker_url:
        executor = "CeleryExecutor"
    else:
        executor = "ops.preload_executor.PreloadingLocalExecutor" if cfg.preload_task_libraries else "LocalExecutor"
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": cfg.airflow_db_url,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": cfg.airflow_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret_file.read_text().strip(),
        # Notice new DAG files within seconds instead of five minutes.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(cfg.home / "logs" / "airflow"),
        "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
        # An idle scheduler sleeps up to this long before it sees a finished task or a new
        # asset event: 1 s by default, paid at every step of the chain (docs/benchmarks.md).
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
        # A task whose worker died is failed after this long without a heartbeat, then retried.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(cfg.task_heartbeat_timeout_seconds),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": str(cfg.task_retry_delay_seconds),
        "MLFLOW_TRACKING_URI": cfg.mlflow_tracking_uri,
        "MLOPS_HOME": str(cfg.home),
    }
    if cfg.celery_broker_url:
        env.update(celery_env(cfg))
    if cfg.s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = cfg.s3_endpoint_url
    return env


CELERY_QUEUES = ("default", "training")  # the training DAG's tasks carry queue="training"


def celery_env(cfg: settings.Settings) -> dict[str, str]:
    """The CeleryExecutor's configuration: broker, result backend, queues, the warm-worker hook."""
    env = {
        "AIRFLOW__CELERY__BROKER_URL": cfg.celery_broker_url,
        # ops.celery_config: Airflow's Celery settings, plus the preload of the task libraries.
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "ops.celery_config.CELERY_CONFIG",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(cfg.celery_worker_concurrency),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": CELERY_QUEUES[0],
        # Every broker key under the profile's prefix: the stack owns them and `clean` deletes them.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": cfg.redis_key_prefix,
        # Redelivery of an unacknowledged message (a task whose worker died) is left to
        # Airflow's heartbeat check and retries; this only silences the provider's warning.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
    }
    if cfg.celery_result_backend:
        env["AIRFLOW__CELERY__RESULT_BACKEND"] = cfg.celery_result_backend
    return env


def worker_name(cfg: settings.Settings, index: int) -> str:
    """The Celery node name of worker `index` (1-based): unique per stack, so stacks never mix."""
    return f"{cfg.redis_key_prefix.strip(':_') or 'mlops'}-worker{index}@{socket.gethostname()}"


def celery_workers(cfg: settings.Settings) -> list[Service]:
    if not cfg.celery_broker_url:
        return []
    out = []
    for i in range(1, cfg.celery_workers + 1):
        out.append(Service(f"airflow-worker-{i}", [
            _bin("airflow"), "celery", "worker", "--queues", ",".join(CELERY_QUEUES),
            "--concurrency", str(cfg.celery_worker_concurrency), "--celery-hostname", worker_name(cfg, i),
            "--pid", str(cfg.home / "run" / f"airflow-worker-{i}.celery.pid"),
            # Task logs are written to the shared log folder the api-server reads: no log server
            # (its fixed port 8793 would collide between two workers on one machine).
            "--skip-serve-logs",
        ], "", batch=True))
    return out


def services(cfg: settings.Settings) -> list[Service]:
    airflow = _bin("airflow")
    mlflow_port = _port(cfg.mlflow_tracking_uri)
    out = []
    if cfg.local_s3_server:
        out.append(Service("s3", [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(_port(cfg.s3_endpoint_url))],
                           f"{cfg.s3_endpoint_url}/moto-api/"))
    out += [
        Service("mlflow", [
            _bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
            "--backend-store-uri", cfg.mlflow_backend_store_uri,
            "--artifacts-destination", cfg.mlflow_artifacts_destination,
        ], f"{cfg.mlflow_tracking_uri}/health", batch=True),
        Service("airflow-api-server", [airflow, "api-server"], f"{cfg.airflow_url}/api/v2/monitor/health",
                batch=True),
        # No log servers: the api-server reads the task logs from the shared log folder, and Airflow
        # binds its log servers (8793, 8794) to every interface.
        Service("airflow-scheduler", [airflow, "scheduler", "--skip-serve-logs"], "", batch=True),
        Service("airflow-dag-processor", [airflow, "dag-processor"], "", batch=True),
        Service("airflow-triggerer", [airflow, "triggerer", "--skip-serve-logs"], "", batch=True),
        *celery_workers(cfg),
    ]
    # The model's project is created first (the UI's file watcher misses projects created later), in the
    # service's own niced process: importing Evidently took 26-58 s here, which the stack's start waited for.
    ui = [_bin("evidently"), "ui", "--workspace", str(cfg.evidently_workspace), "--host", "127.0.0.1",
          "--port", str(cfg.evidently_port)]
    out.append(Service("evidently", [
        "sh", "-c", f"{shlex.quote(sys.executable)} -m monitoring.dashboard prepare && exec {shlex.join(ui)}",
    ], f"{evidently_url(cfg)}/api/version", batch=True))
    out.append(Service("model-server", [
        sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1",
        "--port", str(_port(cfg.model_server_url)), "--no-access-log",
    ], f"{cfg.model_server_url}/health"))
    return out


def evidently_url(cfg: settings.Settings) -> str:
    """The dashboard over time: `evidently ui` on the monitoring reports' workspace."""
    return f"http://127.0.0.1:{cfg.evidently_port}"


def _pid_file(cfg: settings.Settings, name: str) -> Path:
    return cfg.home / "run" / f"{name}.pid"


def running_pid(cfg: settings.Settings, name: str) -> int | None:
    path = _pid_file(cfg, name)
    if not path.exists():
        return None
    pid = int(path.read_text().strip())
    if not _alive(pid):
        path.unlink(missing_ok=True)
        return None
    return pid


def _alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _env(cfg: settings.Settings) -> dict[str, str]:
    # Importing feast points PROMETHEUS_MULTIPROC_DIR at a temporary folder of this process;
    # the services must not inherit it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_MULTIPROC")}
    env.update(airflow_env(cfg))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    # MLflow 3's server otherwise starts a job runner with a dozen huey worker processes
    # (about 2 GB) for features this project does not use.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    # MLflow's telemetry client fetches its config in a thread of every process that imports
    # mlflow; offline the fetch fails and the thread deletes _MLFLOW_TELEMETRY_SESSION_ID from
    # os.environ while requests may be iterating it: "log-batch failed with exception
    # '_MLFLOW_TELEMETRY_SESSION_ID'" in 3 of 8 candidate tasks of the celery bench.
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    # Evidently's UI and SDK send usage telemetry unless this is set.
    env["DO_NOT_TRACK"] = "1"
    return env


def _migrate(cfg: settings.Settings, env: dict[str, str]) -> None:
    log = cfg.home / "logs" / "airflow-db-migrate.log"
    with open(log, "w") as fh:
        subprocess.run([_bin("airflow"), "db", "migrate"], env=env, stdout=fh, stderr=subprocess.STDOUT,
                       check=True, cwd=cfg.home)


def _airflow_healthy(body: dict) -> bool:
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((body.get(p) or {}).get("status") == "healthy" for p in parts)


def wait_healthy(cfg: settings.Settings, timeout: float = 180, only: set[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    pending = {s.name: s for s in services(cfg) if s.health_url and (only is None or s.name in only)}
    while pending and time.monotonic() < deadline:
        for name, svc in list(pending.items()):
            if running_pid(cfg, name) is None:
                raise RuntimeError(f"{name} exited; see {cfg.home / 'logs' / (name + '.log')}")
            try:
                resp = httpx.get(svc.health_url, timeout=2)
            except httpx.HTTPError:
                continue
            if resp.status_code != 200:
                continue
            if name == "airflow-api-server" and not _airflow_healthy(resp.json()):
                continue
            del pending[name]
        time.sleep(0.5)
    if pending:
        raise TimeoutError(f"not healthy after {timeout:.0f}s: {sorted(pending)}; logs in {cfg.home / 'logs'}")
    workers = [s.name for s in celery_workers(cfg) if only is None or s.name in only]
    if workers:
        wait_workers(cfg, [int(n.rsplit("-", 1)[1]) for n in workers], max(deadline - time.monotonic(), 30))


def ping_workers(cfg: settings.Settings, indexes: list[int], timeout: float = 10) -> set[str]:
    """The Celery workers (node names) among `indexes` that answer `celery inspect ping`."""
    names = [worker_name(cfg, i) for i in indexes]
    argv = [_bin("celery"), "--app", "airflow.providers.celery.executors.celery_executor.app", "inspect", "ping",
            "--timeout", str(timeout), "--json", "--destination", ",".join(names)]
    out = subprocess.run(argv, env=_env(cfg), capture_output=True, text=True, cwd=cfg.home).stdout
    import json

    answered = set()
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                answered |= set(json.loads(line))
            except ValueError:
                pass
    return answered & set(names)


def wait_workers(cfg: settings.Settings, indexes: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    wanted = {worker_name(cfg, i) for i in indexes}
    answered: set[str] = set()
    while time.monotonic() < deadline:
        for i in indexes:
            if running_pid(cfg, f"airflow-worker-{i}") is None:
                raise RuntimeError(f"airflow-worker-{i} exited; see {cfg.home / 'logs' / f'airflow-worker-{i}.log'}")
        answered = ping_workers(cfg, indexes, timeout=3)
        if answered >= wanted:
            return
        time.sleep(1)
    raise TimeoutError(f"Celery workers not answering after {timeout:.0f}s: {sorted(wanted - answered)}")


def _start(cfg: settings.Settings, svc: Service, env: dict[str, str]) -> None:
    log = open(cfg.home / "logs" / f"{svc.name}.log", "ab")
    niceness = cfg.batch_niceness if svc.batch else 0
    proc = subprocess.Popen(svc.argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=cfg.home, start_new_session=True,
                            preexec_fn=(lambda: os.nice(niceness)) if niceness else None)
    _pid_file(cfg, svc.name).write_text(str(proc.pid))


def up(cfg: settings.Settings | None = None, timeout: float = 180, extra_env: dict[str, str] | None = None,
       later: frozenset[str] = frozenset()) -> None:
    """Start what is not running and wait until healthy. `extra_env` (benchmarks: another DAG
    folder) goes to every service on top of the stack's own configuration. The services named in
    `later` start once the others are healthy, and are not waited for: the demo and the loop's tests
    do not need the dashboard's UI (`evidently`) to drive the chain, and its start-up competed for the
    two cores with everything else (the stack took about 79 s to be healthy with it, 36 s before it)."""
    cfg = cfg or settings.get()
    for sub in ("run", "logs", "mlflow/artifacts"):
        (cfg.home / sub).mkdir(parents=True, exist_ok=True)
    cfg.evidently_workspace.mkdir(parents=True, exist_ok=True)
    env = {**_env(cfg), **(extra_env or {})}
    todo = [s for s in services(cfg) if running_pid(cfg, s.name) is None]
    if any(s.name == "s3" for s in todo):
        _start(cfg, next(s for s in todo if s.name == "s3"), env)
        wait_healthy(cfg, 60, only={"s3"})
    create_buckets(cfg)
    create_landing_zone(cfg)
    create_databases(cfg)
    if any(s.name.startswith("airflow") for s in todo):
        _migrate(cfg, env)
    for svc in todo:
        if svc.name != "s3" and svc.name not in later:
            _start(cfg, svc, env)
    wait_healthy(cfg, timeout, only={s.name for s in services(cfg) if s.name not in later})
    for svc in todo:
        if svc.name in later:
            _start(cfg, svc, env)


def create_landing_zone(cfg: settings.Settings) -> str:
    """The landing folder users copy files into exists once the stack is up (S3 needs no folder)."""
    import storage

    store = storage.Storage.from_settings(cfg)
    url = store.url("landing")
    if store.protocol == "file":
        store.fs.makedirs(store._path(url), exist_ok=True)
    return url


def _postgres_databases(cfg: settings.Settings) -> dict[str, str]:
    """Database name -> server URL (without the database) of every Postgres URL in the settings."""
    from urllib.parse import urlunparse

    found = {}
    urls = [cfg.airflow_db_url, cfg.mlflow_backend_store_uri, cfg.feast_registry, cfg.feast_online_store]
    if cfg.celery_broker_url and cfg.celery_result_backend:
        urls.append(cfg.celery_result_backend.removeprefix("db+"))
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme.split("+")[0] in ("postgresql", "postgres"):
            server = urlunparse(("postgresql", parsed.netloc, "/postgres", "", "", ""))
            found[parsed.path.lstrip("/")] = server
    return found


def create_databases(cfg: settings.Settings) -> list[str]:
    import psycopg2

    created = []
    for name, server in _postgres_databases(cfg).items():
        if not name.startswith(cfg.db_prefix):
            raise SystemExit(f"refusing to use database {name!r}: it lacks the prefix {cfg.db_prefix!r}")
        conn = psycopg2.connect(server)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
                created.append(name)
        conn.close()
    return created


def drop_databases(cfg: settings.Settings) -> list[str]:
    """Drop this profile's databases: only names that carry MLOPS_DB_PREFIX."""
    import psycopg2

    dropped = []
    for name, server in _postgres_databases(cfg).items():
        if not name.startswith(cfg.db_prefix):
            continue
        conn = psycopg2.connect(server)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
        dropped.append(name)
    return dropped


def _redis(url: str):
    import redis

    return redis.Redis.from_url(url)


def redis_keys(cfg: settings.Settings) -> dict[str, list[bytes]]:
    """The Redis keys this stack owns, by the URL of their database: the broker's keys (all under
    MLOPS_REDIS_PREFIX) and the online rows of the Feast project (Feast ends each key with it)."""
    owned: dict[str, list[bytes]] = {}
    if cfg.celery_broker_url.startswith(("redis://", "rediss://")):
        owned[cfg.celery_broker_url] = list(_redis(cfg.celery_broker_url).scan_iter(
            match=_glob_escape(cfg.redis_key_prefix) + "*", count=1000))
    if cfg.feast_online_store.startswith(("redis://", "rediss://")):
        keys = _redis(cfg.feast_online_store).scan_iter(match="*" + _glob_escape(cfg.feast_project), count=1000)
        owned.setdefault(cfg.feast_online_store, []).extend(keys)
    return owned


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def drop_redis_keys(cfg: settings.Settings) -> int:
    """Delete the Redis keys this stack owns (never a whole database). Returns how many."""
    deleted = 0
    for url, keys in redis_keys(cfg).items():
        client = _redis(url)
        for i in range(0, len(keys), 500):
            deleted += client.delete(*keys[i:i + 500])
    return deleted


def create_buckets(cfg: settings.Settings) -> None:
    buckets = {urlparse(u).netloc for u in (cfg.storage_url, cfg.mlflow_artifacts_destination)
               if u.startswith("s3://")}
    if not buckets:
        return
    import boto3

    s3 = boto3.client("s3", endpoint_url=cfg.s3_endpoint_url or None)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in sorted(buckets - existing):
        s3.create_bucket(Bucket=bucket)


def down(cfg: settings.Settings | None = None, grace: float = 30) -> list[str]:
    """Stop every service `up` started: SIGTERM to its process group, SIGKILL after `grace`."""
    cfg = cfg or settings.get()
    stopped = []
    groups = {}
    for svc in reversed(services(cfg)):
        pid = running_pid(cfg, svc.name)
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        groups[svc.name] = pid
    deadline = time.monotonic() + grace
    for name, pgid in groups.items():
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.2)
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        _pid_file(cfg, name).unlink(missing_ok=True)
        stopped.append(name)
    if cfg.drop_on_down:
        drop_databases(cfg)
        drop_redis_keys(cfg)
    return stopped


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # A zombie leader of a group whose members are all gone still answers; reap it if it is ours.
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    out = subprocess.run(["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    return any(not s.startswith("Z") for s in out)


def status(cfg: settings.Settings | None = None) -> dict[str, int | None]:
    cfg = cfg or settings.get()
    return {s.name: running_pid(cfg, s.name) for s in services(cfg)}


def print_urls(cfg: settings.Settings) -> None:
    from ops.airflow_api import password_file

    print(f"Airflow      {cfg.airflow_url}  (user admin, password in {password_file(cfg)})")
    print(f"  Assets     {cfg.airflow_url}/assets")
    print(f"MLflow       {cfg.mlflow_tracking_uri}")
    print(f"Model server {cfg.model_server_url}/docs")
    print(f"Dashboard    {evidently_url(cfg)}   (Evidently: a project per model, a run per monitoring window)")
    print(f"Landing zone {cfg.storage_url}/landing   (make drop MONTH=2013-02)")
    print(f"Logs         {cfg.home / 'logs'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.stack")
    parser.add_argument("command", choices=["up", "down", "status", "env", "clean"])
    args = parser.parse_args(argv)
    cfg = settings.get()
    if args.command == "up":
        t0 = time.monotonic()
        up(cfg)
        print(f"stack healthy in {time.monotonic() - t0:.1f}s")
        print_urls(cfg)
    elif args.command == "down":
        stopped = down(cfg)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    elif args.command == "clean":
        if any(status(cfg).values()):
            raise SystemExit("the stack is running: `make down` first")
        print("dropped databases: " + (", ".join(drop_databases(cfg)) or "none"))
        print(f"deleted Redis keys: {drop_redis_keys(cfg)}")
    elif args.command == "env":
        for k, v in sorted(airflow_env(cfg).items()):
            if "SECRET" not in k:
                print(f"export {k}={v}")
    else:
        for name, pid in status(cfg).items():
            print(f"{name:24} {'running, pid ' + str(pid) if pid else 'stopped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
