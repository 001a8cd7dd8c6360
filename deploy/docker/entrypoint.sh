#!/bin/sh
# quantserve's container entrypoint: flags from QUANTSERVE_* environment variables (set by the
# image and the Helm chart), then any arguments given to the container, which win.
#   QUANTSERVE_MODEL_ROOT      --model_root (models are mounted or copied here)
#   QUANTSERVE_CONFIG          --config (startup config: models and routes; empty = none)
#   QUANTSERVE_LISTEN          --listen
#   QUANTSERVE_METRICS_LISTEN  --metrics_listen
#   QUANTSERVE_ARGS            more flags, space-separated
set -eu
set -- --model_root="${QUANTSERVE_MODEL_ROOT:-/models}" \
  --listen="${QUANTSERVE_LISTEN:-0.0.0.0:50051}" \
  --metrics_listen="${QUANTSERVE_METRICS_LISTEN:-0.0.0.0:9090}" \
  ${QUANTSERVE_CONFIG:+--config="$QUANTSERVE_CONFIG"} \
  ${QUANTSERVE_ARGS:-} "$@"
# exec: quantserve is PID 1's child-less replacement, so SIGTERM reaches it and drains.
exec quantserve "$@"
