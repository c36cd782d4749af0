"""The embedded local stack: Airflow's four components, MLflow and the model server.

    python -m ops.stack up      # start what is not running, wait until healthy
    python -m ops.stack down    # stop exactly what `up` started, by pid
    python -m ops.stack status

Each service runs in its own process group; its pid is kept in
`.local/run/<name>.pid` and its output in `.local/logs/<name>.log`. `down`
signals the whole group, so no worker or child is left behind.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
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
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
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
        "MLFLOW_TRACKING_URI": cfg.mlflow_tracking_uri,
        "MLOPS_HOME": str(cfg.home),
    }
    return env


def services(cfg: settings.Settings) -> list[Service]:
    airflow = _bin("airflow")
    mlflow_dir = cfg.home / "mlflow"
    mlflow_port = _port(cfg.mlflow_tracking_uri)
    out = [
        Service("mlflow", [
            _bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}",
            "--artifacts-destination", str(mlflow_dir / "artifacts"),
        ], f"{cfg.mlflow_tracking_uri}/health"),
        Service("airflow-api-server", [airflow, "api-server"], f"{cfg.airflow_url}/api/v2/monitor/health"),
        Service("airflow-scheduler", [airflow, "scheduler"], ""),
        Service("airflow-dag-processor", [airflow, "dag-processor"], ""),
        Service("airflow-triggerer", [airflow, "triggerer"], ""),
    ]
    server_app = REPO_ROOT / "serving" / "app.py"
    if server_app.exists():
        out.append(Service("model-server", [
            sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1",
            "--port", str(_port(cfg.model_server_url)), "--no-access-log",
        ], f"{cfg.model_server_url}/health"))
    return out


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
    env = {**os.environ, **airflow_env(cfg)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _migrate(cfg: settings.Settings, env: dict[str, str]) -> None:
    log = cfg.home / "logs" / "airflow-db-migrate.log"
    with open(log, "w") as fh:
        subprocess.run([_bin("airflow"), "db", "migrate"], env=env, stdout=fh, stderr=subprocess.STDOUT,
                       check=True, cwd=cfg.home)


def _airflow_healthy(body: dict) -> bool:
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((body.get(p) or {}).get("status") == "healthy" for p in parts)


def wait_healthy(cfg: settings.Settings, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    pending = {s.name: s for s in services(cfg) if s.health_url}
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


def up(cfg: settings.Settings | None = None, timeout: float = 180) -> None:
    cfg = cfg or settings.get()
    for sub in ("run", "logs", "mlflow/artifacts", "storage/landing"):
        (cfg.home / sub).mkdir(parents=True, exist_ok=True)
    env = _env(cfg)
    todo = [s for s in services(cfg) if running_pid(cfg, s.name) is None]
    if any(s.name.startswith("airflow") for s in todo):
        _migrate(cfg, env)
    for svc in todo:
        log = open(cfg.home / "logs" / f"{svc.name}.log", "ab")
        proc = subprocess.Popen(svc.argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cfg.home, start_new_session=True)
        _pid_file(cfg, svc.name).write_text(str(proc.pid))
    wait_healthy(cfg, timeout)


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
    if any(s.name == "model-server" for s in services(cfg)):
        print(f"Model server {cfg.model_server_url}/docs")
    print(f"Landing zone {cfg.storage_url}/landing   (make drop MONTH=2013-02)")
    print(f"Logs         {cfg.home / 'logs'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.stack")
    parser.add_argument("command", choices=["up", "down", "status", "env"])
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
