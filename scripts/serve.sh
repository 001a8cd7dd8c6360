#!/usr/bin/env bash
# Builds quantserve and serves the embedded default model (assets/models/kjv-llama) on
# 0.0.0.0:50051 (gRPC) and 0.0.0.0:9090 (/metrics). Extra arguments go to quantserve.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_apt
ensure_venv
build quantserve quantserve-cli
exec "$QS_BUILD_DIR/server/quantserve" --model_root="$QS_ROOT/assets/models" \
  --config="$QS_ROOT/deploy/examples/default-model.json" "$@"
