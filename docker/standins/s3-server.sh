#!/bin/sh
# SeaweedFS in one process (master, volume, filer, S3 gateway) storing under DIR (default /data),
# S3 on :9000 with one admin identity: MINIO_ROOT_USER / MINIO_ROOT_PASSWORD, as MinIO's root user.
#   s3-server.sh [DIR]
set -eu
: "${MINIO_ROOT_USER:?set MINIO_ROOT_USER}"
: "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD}"
dir=${1:-/data}

# The identity file holds the secret: mode 0600, in the container's own /tmp.
config=$(mktemp)
chmod 600 "$config"
python - "$config" <<'PY'
import json, os, sys
identity = {"name": "root", "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            "credentials": [{"accessKey": os.environ["MINIO_ROOT_USER"], "secretKey": os.environ["MINIO_ROOT_PASSWORD"]}]}
with open(sys.argv[1], "w") as handle:
    json.dump({"identities": [identity]}, handle)
PY
# Internal traffic stays on loopback (one process); only the S3 port matters to other containers.
# No telemetry, no WebDAV, no Iceberg catalog, no admin UI: the stack uses S3 alone.
exec weed mini -dir="$dir" -ip=127.0.0.1 -ip.bind=0.0.0.0 -s3.port=9000 -s3.config="$config" \
  -master.telemetry=false -webdav=false -admin.ui=false -s3.port.iceberg=0
