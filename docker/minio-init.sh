#!/bin/sh
# The compose job `minio-init`: creates the buckets and the services' own S3 user.
# Runs in the MinIO server image (which ships `mc`) after MinIO is healthy, on
# every `docker compose up`; every step is idempotent.
#
#   bucket of MLOPS_STORAGE_URL                     landing/ processed/ quarantine/ staging/
#                                                   inference/ reports/ (prefixes, made on write)
#   bucket of MLOPS_MLFLOW_ARTIFACTS_DESTINATION    MLflow's artifacts
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${AWS_ACCESS_KEY_ID:?}" "${AWS_SECRET_ACCESS_KEY:?}"
: "${MLOPS_STORAGE_URL:?}" "${MLOPS_MLFLOW_ARTIFACTS_DESTINATION:?}"

mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null

for url in "$MLOPS_STORAGE_URL" "$MLOPS_MLFLOW_ARTIFACTS_DESTINATION"; do
    case "$url" in
        s3://?*) ;;
        *) echo "minio-init: expected an s3:// URL, got '$url'" >&2; exit 1 ;;
    esac
    bucket=${url#s3://}
    bucket=${bucket%%/*}
    mc mb --ignore-existing "local/$bucket"
done

# The services use this key, not the root account. `user add` also resets the
# secret, so a changed AWS_SECRET_ACCESS_KEY in .env takes effect on the next up.
mc admin user add local "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
case "$(mc admin user info local "$AWS_ACCESS_KEY_ID")" in
    *readwrite*) echo "minio-init: $AWS_ACCESS_KEY_ID already has the readwrite policy" ;;
    *) mc admin policy attach local readwrite --user "$AWS_ACCESS_KEY_ID" ;;
esac
echo "minio-init: done"
