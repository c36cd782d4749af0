#!/usr/bin/env bash
# The compose job `airflow-init`: runs once per `docker compose up`, as root, before
# the Airflow components start. Idempotent.
#   1. migrates Airflow's metadata database;
#   2. writes the simple auth manager's password file, so that user `admin` logs in
#      with AIRFLOW_ADMIN_PASSWORD from .env (Airflow keeps a user's password when
#      the file already holds one, and generates one otherwise);
#   3. creates the folders of the shared state volume and gives them to the
#      `airflow` user (uid 50000) that every other service of the image runs as.
set -euo pipefail

: "${MLOPS_HOME:?}" "${AIRFLOW_ADMIN_PASSWORD:?}" "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?}"
AIRFLOW_UID=${AIRFLOW_UID:-50000}

echo "airflow-init: Airflow $(airflow version)"
airflow db migrate

password_file=$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE
offline_dir=${MLOPS_FEAST_OFFLINE_DIR:-$MLOPS_HOME/feast/offline}
mkdir -p "$(dirname "$password_file")" "$MLOPS_HOME/logs/airflow" "$MLOPS_HOME/samples" "$offline_dir"
python - "$password_file" <<'PY'
import json, os, sys

path = sys.argv[1]
tmp = path + ".tmp"
with open(tmp, "w") as fh:
    json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, fh)
    fh.write("\n")
os.chmod(tmp, 0o600)
os.replace(tmp, path)
PY

chown -R "$AIRFLOW_UID:0" "$MLOPS_HOME" "$offline_dir" "$(dirname "$password_file")"
echo "airflow-init: done; user admin, password from AIRFLOW_ADMIN_PASSWORD"
