#!/bin/sh
# Container entry point: one image, three roles, chosen by the first argument.
#   serve        the REST service (`attnlab serve`; ATTNLAB_* variables configure it)
#   ray-head     a Ray head node with the dashboard/Jobs API on :8265 and the GCS on :6379
#   ray-worker   a Ray worker joining RAY_HEAD_ADDRESS (default ray-head:6379); GPUs are detected
#   anything else is executed as given, e.g. `attnlab train --config configs/...`
# Ray token auth: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN on every node and on every client.
# RAY_START_ARGS adds flags to `ray start` (e.g. --num-cpus=8 or --resources='{"big_memory": 1}').
set -eu

role="${1:-serve}"
case "$role" in
  serve)
    shift || true
    exec attnlab serve "$@"
    ;;
  ray-head)
    shift
    # shellcheck disable=SC2086  # RAY_START_ARGS is a list of flags
    exec ray start --head --block --disable-usage-stats \
      --port=6379 --dashboard-host=0.0.0.0 --dashboard-port=8265 \
      --dashboard-agent-listen-port=52365 ${RAY_START_ARGS:-} "$@"
    ;;
  ray-worker)
    shift
    # shellcheck disable=SC2086
    exec ray start --block --disable-usage-stats \
      --address="${RAY_HEAD_ADDRESS:-ray-head:6379}" \
      --dashboard-agent-listen-port=52365 ${RAY_START_ARGS:-} "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
