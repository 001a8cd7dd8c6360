#!/usr/bin/env bash
# Serving benchmark, one command: makes the bench model (cached), builds qs_serve_bench in
# build-bench if needed and runs it: 1, 4 and 16 concurrent gRPC Generate streams through an
# in-process server, then the gRPC + tokenization + sampling overhead. See bench/README.md.
#
#   bench/serve.sh [--quick] [--preset bf16] [--threads N] [--streams 1,4,16]
#                  [--new_tokens 128] [--rounds N]
#
# --quick: the hidden 512 / 4 layers model (a smoke test). Results go to
# $QS_BENCH_DIR/results/serve-<time>/ (QS_BENCH_DIR defaults to ~/.cache/quantserve/bench).
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

quick=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --preset|--threads|--streams|--new_tokens|--rounds|--overhead_repeats)
      args+=("$1" "$2"); shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument $1 (see --help)"; exit 2 ;;
  esac
  shift
done

ensure_apt
ensure_venv
bench_build qs_serve_bench
model="$(bench_model "$quick")"
out="${QS_BENCH_OUT:-$QS_BENCH_DIR/results/serve-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
log "qs_serve_bench on $model"
rc=0
"$QS_BUILD_DIR/bench/qs_serve_bench" --model "$model" --threads "$(nproc)" "${args[@]}" \
  --json "$out/serve.json" | tee "$out/serve.md" || rc=$?
log "results in $out"
exit "$rc"
