#!/bin/sh
# Start `mlflow server` for the compose stack from environment variables (see docker/env.example):
#   MLFLOW_BACKEND_STORE_URI     postgresql+psycopg2://user:password@postgres:5432/mlflow
#   MLFLOW_ARTIFACTS_DESTINATION s3://bucket/ (MinIO; MLFLOW_S3_ENDPOINT_URL and AWS_* credentials)
#   MLFLOW_ALLOWED_HOSTS         Host headers accepted (mlflow 3.x rejects others, DNS-rebinding guard)
#   MLFLOW_AUTH_ADMIN_PASSWORD   non-empty = basic auth on (`--app-name basic-auth`), admin created
#                                on first start (12 characters at least); clients then need
#                                MLFLOW_TRACKING_USERNAME/PASSWORD
#   MLFLOW_FLASK_SERVER_SECRET_KEY  the auth app's CSRF key, the same in every worker; made once and
#                                kept on the auth volume when unset
# Artifacts are served through this server (--serve-artifacts), so clients need no S3 credentials.
set -eu

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI (postgresql+psycopg2://...)}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION (s3://bucket/)}"
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which this image does not have: say so now
# rather than crash-loop on an import error.
case "$MLFLOW_BACKEND_STORE_URI" in
  postgresql://* | postgres://*)
    echo "MLFLOW_BACKEND_STORE_URI must name its driver: postgresql+psycopg2://... (the driver this image has)" >&2
    exit 2
    ;;
esac

set -- --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --serve-artifacts --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  --host 0.0.0.0 --port 5000 --workers "${MLFLOW_WORKERS:-2}" \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:5000,localhost,localhost:*,127.0.0.1,127.0.0.1:*}" \
  "$@"

if [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]; then
  # The auth app keeps its users in its own store; SQLite on a volume is enough for one server.
  export MLFLOW_AUTH_CONFIG_PATH=/var/lib/mlflow-auth/basic_auth.ini
  cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = sqlite:////var/lib/mlflow-auth/basic_auth.db
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
  # With several workers the auth app refuses to start without one shared CSRF key.
  if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
    key_file=/var/lib/mlflow-auth/flask_secret_key
    if [ ! -s "$key_file" ]; then
      (umask 077 && python -c "import secrets; print(secrets.token_hex(32))" > "$key_file")
    fi
    MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$key_file")
  fi
  export MLFLOW_FLASK_SERVER_SECRET_KEY
  set -- "$@" --app-name basic-auth
fi

exec mlflow server "$@"
