#!/usr/bin/env bash
# Print one of the images' lock files (run from anywhere; uses the repository's .venv):
#   docker/lock-requirements.sh > docker/requirements.lock
#       attnlab's runtime dependencies from pyproject.toml, preferring the versions installed in .venv
#       (the ones the test suite ran against)
#   docker/lock-requirements.sh mlflow > docker/mlflow-requirements.lock
#       the MLflow server's packages (docker/Dockerfile.mlflow), every one pinned; packages the
#       clients also use get the same versions as docker/requirements.lock
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
target=${1:-attnlab}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

case "$target" in
  attnlab)
    "$python" -m pip freeze --exclude-editable | grep -v ' @ ' > "$work/constraints.txt"
    set -- .
    cat <<'HEADER'
# Exact versions of attnlab's runtime dependencies, as resolved from pyproject.toml and tested.
# The torch stack (torch, torchvision, triton, nvidia-*, cuda-*) is not listed: each image installs
# its own build of torch==2.14.1 / torchvision==0.29.1 (CPU wheels or PyPI's CUDA wheels) first.
# Regenerate after changing pyproject.toml: docker/lock-requirements.sh > docker/requirements.lock
HEADER
    ;;
  mlflow)
    # The server's mlflow is the clients' (same REST API); psycopg2 is the driver its
    # postgresql+psycopg2:// URI names; boto3 writes the artifacts to S3.
    grep -v '^#' docker/requirements.lock > "$work/constraints.txt"
    set -- "mlflow[auth]==$(sed -n 's/^mlflow==//p' docker/requirements.lock)" psycopg2-binary==2.9.13 boto3==1.44.5
    cat <<'HEADER'
# Every package of the MLflow server image (docker/Dockerfile.mlflow installs them with --no-deps, so
# nothing unpinned slips in). Shared packages match docker/requirements.lock (the clients' versions).
# Regenerate after changing docker/requirements.lock: docker/lock-requirements.sh mlflow > docker/mlflow-requirements.lock
HEADER
    ;;
  *)
    echo "usage: $0 [attnlab|mlflow]" >&2
    exit 2
    ;;
esac

"$python" -m pip install --dry-run --ignore-installed --quiet --report "$work/report.json" \
    --constraint "$work/constraints.txt" "$@" >/dev/null
"$python" - "$work/report.json" "$target" <<'PY'
import json, re, sys

skip = re.compile(r"^(attnlab|torch|torchvision|triton|nvidia-.*|cuda-.*)$")
markers = {"decord": "platform_machine == 'x86_64'"}  # decord ships x86_64 wheels only
pins = sorted((re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(), item["metadata"]["version"])  # PEP 503 names
              for item in json.load(open(sys.argv[1]))["install"])
for name, version in pins:
    if not skip.match(name):
        print(f"{name}=={version}" + (f"; {markers[name]}" if name in markers else ""))
PY
