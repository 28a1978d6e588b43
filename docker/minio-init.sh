#!/bin/sh
# One-shot MinIO setup for docker/compose.yaml: create the MLflow artifact bucket (idempotent).
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/${MLFLOW_BUCKET}"
echo "bucket ${MLFLOW_BUCKET} ready"
