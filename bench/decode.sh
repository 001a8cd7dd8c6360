#!/usr/bin/env bash
# Decode benchmark, one command: makes the bench model (cached), builds qs_decode_bench in
# build-bench if needed, runs it and bench/transformers_bench.py with the same settings, and
# prints the ratio table (bench/compare.py). See bench/README.md.
#
#   bench/decode.sh [--quick] [--threads N] [--methods fp32,bf16,...] [--repeats N]
#                   [--prompt_tokens N] [--decode_tokens N] [--no_transformers]
#
# --quick: hidden 512 / 4 layers model, 32-token prompt, 16 decode tokens, 2 repeats, 256 MiB
# bandwidth buffer (a smoke test, seconds per preset). Results (JSON + markdown) go to
# $QS_BENCH_DIR/results/decode-<time>/ (QS_BENCH_DIR defaults to ~/.cache/quantserve/bench).
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

quick=0 transformers=1
threads="$(nproc)" methods="" repeats="" prompt="" decode=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --no_transformers) transformers=0 ;;
    --threads) threads="$2"; shift ;;
    --methods) methods="$2"; shift ;;
    --repeats) repeats="$2"; shift ;;
    --prompt_tokens) prompt="$2"; shift ;;
    --decode_tokens) decode="$2"; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument $1 (see --help)"; exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then
  prompt="${prompt:-32}" decode="${decode:-16}" repeats="${repeats:-2}" stream_mib=256
else
  prompt="${prompt:-128}" decode="${decode:-64}" repeats="${repeats:-3}" stream_mib=1024
fi

ensure_apt
ensure_venv
bench_build qs_decode_bench
model="$(bench_model "$quick")"
out="${QS_BENCH_OUT:-$QS_BENCH_DIR/results/decode-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
common=(--model "$model" --threads "$threads" --prompt_tokens "$prompt" --decode_tokens "$decode"
        --repeats "$repeats" ${methods:+--methods "$methods"})

log "qs_decode_bench on $model ($threads threads)"
rc=0
"$QS_BUILD_DIR/bench/qs_decode_bench" "${common[@]}" --stream_mib "$stream_mib" \
  --json "$out/ours.json" | tee "$out/ours.md" || rc=$?
compare=(--ours "$out/ours.json")
if [ "$transformers" = 1 ]; then
  log "transformers_bench on $model ($threads threads)"
  "$QS_ROOT/.venv/bin/python" "$QS_ROOT/bench/transformers_bench.py" "${common[@]}" \
    --json "$out/transformers.json" | tee "$out/transformers.md" || rc=$?
  compare+=(--transformers "$out/transformers.json")
fi
if [ -f "$out/ours.json" ]; then
  "$QS_ROOT/.venv/bin/python" "$QS_ROOT/bench/compare.py" "${compare[@]}" | tee "$out/compare.md"
fi
log "results in $out"
exit "$rc"
