#!/usr/bin/env bash
# Entrypoint of airflow-scheduler: runs its command with the executor of the compose profile.
#
# `docker compose --profile celery up` adds the services `redis`, `airflow-worker-1` and
# `airflow-worker-2`; the scheduler waits for `redis` to be healthy (depends_on, required: false)
# and then finds it on the compose network: it runs the CeleryExecutor, and the workers run the
# tasks. Without the profile there is no `redis`: the LocalExecutor of x-airflow-common, tasks
# run in the scheduler container. The Celery settings themselves are in x-airflow-common.
set -euo pipefail
if getent hosts redis >/dev/null 2>&1; then
    export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
fi
echo "airflow-executor.sh: ${AIRFLOW__CORE__EXECUTOR} (compose profile celery: $([ "${AIRFLOW__CORE__EXECUTOR}" = CeleryExecutor ] && echo on || echo off))"
exec "$@"
