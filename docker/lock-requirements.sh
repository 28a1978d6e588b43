#!/usr/bin/env bash
# Print docker/requirements.lock: pyproject.toml's runtime dependencies resolved to exact versions,
# preferring the versions installed in .venv (the ones the test suite ran against).
# Usage (from the repository root): docker/lock-requirements.sh > docker/requirements.lock
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip freeze --exclude-editable | grep -v ' @ ' > "$work/installed.txt"
"$python" -m pip install --dry-run --ignore-installed --quiet --report "$work/report.json" \
    --constraint "$work/installed.txt" . >/dev/null
cat <<'HEADER'
# Exact versions of attnlab's runtime dependencies, as resolved from pyproject.toml and tested.
# The torch stack (torch, torchvision, triton, nvidia-*, cuda-*) is not listed: each image installs
# its own build of torch==2.14.1 / torchvision==0.29.1 (CPU wheels or PyPI's CUDA wheels) first.
# Regenerate after changing pyproject.toml: docker/lock-requirements.sh > docker/requirements.lock
HEADER
"$python" - "$work/report.json" <<'PY'
import json, re, sys

skip = re.compile(r"^(attnlab|torch|torchvision|triton|nvidia-.*|cuda-.*)$")
markers = {"decord": "platform_machine == 'x86_64'"}  # decord ships x86_64 wheels only
pins = sorted((re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(), item["metadata"]["version"])  # PEP 503 names
              for item in json.load(open(sys.argv[1]))["install"])
for name, version in pins:
    if not skip.match(name):
        print(f"{name}=={version}" + (f"; {markers[name]}" if name in markers else ""))
PY
