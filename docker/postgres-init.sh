#!/usr/bin/env bash
# Creates one role and its databases per service. The postgres image runs this
# from /docker-entrypoint-initdb.d on the first start of an empty data volume only
# (so a changed password in .env needs `docker compose down -v`; README.md, "Run it with docker compose").
#
# The names carry MLOPS_DB_PREFIX's value, mlops_, as in the native profile.
#
#   role     databases                                 used by
#   airflow  mlops_airflow                             Airflow metadata (MLOPS_AIRFLOW_DB_URL)
#   mlflow   mlops_mlflow                              MLflow backend store
#                                                      (MLOPS_MLFLOW_BACKEND_STORE_URI)
#   feast    mlops_feast_registry, mlops_feast_online  Feast SQL registry and online store
#                                                      (MLOPS_FEAST_REGISTRY, MLOPS_FEAST_ONLINE_STORE)
set -euo pipefail

create_role_and_databases() {
    local role=$1 password=$2
    shift 2
    # psql variables keep the password out of the SQL text and quote it safely.
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v role="$role" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
SQL
    local db
    for db in "$@"; do
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            -v role="$role" -v db="$db" <<'SQL'
CREATE DATABASE :"db" OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
        echo "postgres-init: database $db owned by $role"
    done
}

create_role_and_databases airflow "${AIRFLOW_DB_PASSWORD:?}" mlops_airflow
create_role_and_databases mlflow "${MLFLOW_DB_PASSWORD:?}" mlops_mlflow
create_role_and_databases feast "${FEAST_DB_PASSWORD:?}" mlops_feast_registry mlops_feast_online
