"""Container health check: `python healthcheck.py ROLE` exits 0 when that role's process answers.

Only the standard library (the slim images have no curl). The endpoints need no token: the
service's /health is public, and Ray exempts its health endpoints from token auth.
"""

import os
import sys
import urllib.request

ENDPOINTS = {
    "serve": f"http://127.0.0.1:{os.environ.get('ATTNLAB_PORT', '8000')}/health",
    "ray-head": "http://127.0.0.1:8265/api/gcs_healthz",  # dashboard on the head: GCS reachable
    "ray-worker": "http://127.0.0.1:52365/api/local_raylet_healthz",  # this node's agent: raylet alive
}


def main(role: str) -> int:
    if role not in ENDPOINTS:
        print(f"unknown role {role!r}; expected one of {', '.join(ENDPOINTS)}", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(ENDPOINTS[role], timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"{role} not healthy: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "serve"))
