#!/usr/bin/env bash
# Soak: a real quantserve under steady mixed traffic for MINUTES, its resident memory and every
# request's latency recorded over time, then summarized and plotted (soak.svg).
#
#   scripts/soak.sh [--minutes=30] [--clients=4] [--out=DIR]
#
# Traffic (each client in a loop, against the default model and a 4-bit variant of it behind
# the A/B route "kjv"): Generate through the route (32 tokens), Generate with a 150 ms deadline
# that usually expires mid-stream (the cancellation path), Score, Tokenize; every 2 minutes the
# variant is unloaded and loaded again while traffic continues (the route skips it meanwhile).
# Fails when the server dies, exits non-zero on SIGTERM, answers any request with a status other
# than OK (or DEADLINE_EXCEEDED where a deadline was set), or its resident set after the first
# minute grows by more than 10% (--max_rss_growth) to the end.
#
# Writes DIR/requests.tsv (end ms, op, latency ms, status), DIR/rss.tsv (ms, RSS KiB),
# DIR/server.log, DIR/summary.txt and DIR/soak.svg. Not run by CI in full: ctest runs a 20 s
# smoke (soak_smoke). QS_SOAK_NO_BUILD=1 uses the binaries already in $QS_BUILD_DIR.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
die() { log "soak: $*"; exit 1; }

MINUTES=30
CLIENTS=4
MAX_RSS_GROWTH=10
OUT=""
for arg in "$@"; do
  case "$arg" in
    --minutes=*) MINUTES="${arg#*=}" ;;
    --clients=*) CLIENTS="${arg#*=}" ;;
    --max_rss_growth=*) MAX_RSS_GROWTH="${arg#*=}" ;;
    --out=*) OUT="${arg#*=}" ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-$HOME/.cache/quantserve/soak/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
if [ "${QS_SOAK_NO_BUILD:-0}" != 1 ]; then
  ensure_apt
  build quantserve quantserve-cli
fi
SERVER="$QS_BUILD_DIR/server/quantserve"
CLI_BIN="$QS_BUILD_DIR/cli/quantserve-cli"

PORT=$((20000 + RANDOM % 20000))
MPORT=$((PORT + 1))
cli() { "$CLI_BIN" --server="127.0.0.1:$PORT" "$@"; }
now_ms() { date +%s%3N; }

"$SERVER" --model_root="$QS_ROOT/assets/models" \
  --config="$QS_ROOT/deploy/examples/default-model.json" \
  --listen="127.0.0.1:$PORT" --metrics_listen="127.0.0.1:$MPORT" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 240); do
  cli health kjv-llama >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$OUT/server.log"; die "the server exited while starting"; }
  sleep 0.5
done
cli health kjv-llama >/dev/null 2>&1 || die "kjv-llama did not become SERVING"
VARIANT_CONFIG='{"quant_method":"hqq","nbits":4,"group_size":64}'
cli load kjv-hqq4 kjv-llama --quantization_config="$VARIANT_CONFIG" >/dev/null 2>&1 ||
  die "loading the variant failed"
cli route set kjv kjv-llama=1 kjv-hqq4=1 >/dev/null || die "route set failed"
log "soak: server pid $SERVER_PID on 127.0.0.1:$PORT, $CLIENTS clients, $MINUTES min -> $OUT"

START_MS=$(now_ms)
END_MS=$(awk -v s="$START_MS" -v m="$MINUTES" 'BEGIN { printf "%.0f", s + m * 60000 }')
: >"$OUT/requests.tsv"
: >"$OUT/rss.tsv"

# One request: appends "end_ms op latency_ms status" (status: OK or the gRPC code).
request() {
  local op="$1"; shift
  local t0 t1 err status
  t0=$(now_ms)
  if err=$(cli "$@" 2>&1 >/dev/null); then
    status=OK
  else
    status=$(grep -oE '[A-Z_]{5,}' <<<"$err" | head -1)
    status=${status:-FAILED}
  fi
  t1=$(now_ms)
  printf '%s\t%s\t%s\t%s\n' "$t1" "$op" "$((t1 - t0))" "$status" >>"$OUT/requests.tsv"
}

client() {
  local i=0
  while [ "$(now_ms)" -lt "$END_MS" ]; do
    case $((RANDOM % 4)) in
      0) request generate generate kjv "And God said" --max_new_tokens=32 --ignore_eos ;;
      1) request generate_deadline --timeout_seconds=0.15 generate kjv "In the beginning" \
           --max_new_tokens=64 --ignore_eos ;;
      2) request score score kjv-llama "For God so loved the world, that he gave his only begotten Son" ;;
      3) request tokenize tokenize kjv "Blessed are the meek: for they shall inherit the earth." ;;
    esac
    i=$((i + 1))
  done
}

for _ in $(seq "$CLIENTS"); do client & done

# The variant is unloaded and loaded again every 2 minutes; RSS every 5 s.
NEXT_CHURN=$((START_MS + 120000))
while [ "$(now_ms)" -lt "$END_MS" ]; do
  kill -0 "$SERVER_PID" 2>/dev/null || die "the server died during the soak (see $OUT/server.log)"
  printf '%s\t%s\n' "$(now_ms)" "$(awk '/^VmRSS/ { print $2 }' "/proc/$SERVER_PID/status")" >>"$OUT/rss.tsv"
  if [ "$(now_ms)" -ge "$NEXT_CHURN" ]; then
    request unload unload kjv-hqq4
    request load load kjv-hqq4 kjv-llama --quantization_config="$VARIANT_CONFIG"
    NEXT_CHURN=$((NEXT_CHURN + 120000))
  fi
  sleep 5
done
wait $(jobs -p | grep -v "^$SERVER_PID$") 2>/dev/null || true
printf '%s\t%s\n' "$(now_ms)" "$(awk '/^VmRSS/ { print $2 }' "/proc/$SERVER_PID/status")" >>"$OUT/rss.tsv"

kill -TERM "$SERVER_PID"
SERVER_RC=0
wait "$SERVER_PID" || SERVER_RC=$?
trap - EXIT
log "soak: server exited with $SERVER_RC after SIGTERM"

python3 "$QS_ROOT/scripts/soak_report.py" "$OUT" --max_rss_growth="$MAX_RSS_GROWTH" \
  --server_rc="$SERVER_RC"
