# Shared by bench/decode.sh and bench/serve.sh: the bench build directory and the bench model.
# Sourced, not run. Builds in build-bench (QS_BUILD_BENCH=ON, tests off), never in build/.
QS_BUILD_DIR="${QS_BENCH_BUILD_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build-bench}"
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
QS_BENCH_DIR="${QS_BENCH_DIR:-$QS_CACHE_DIR/bench}"

# Configures build-bench with the benchmarks on (once) and builds `$@`.
bench_build() {
  if ! grep -qs '^QS_BUILD_BENCH:BOOL=ON' "$QS_BUILD_DIR/CMakeCache.txt"; then
    cmake -S "$QS_ROOT" -B "$QS_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DQS_BUILD_BENCH=ON -DQS_BUILD_TESTS=OFF -DQS_BUILD_SERVER=ON >/dev/null
  fi
  build "$@"
}

# Makes (or reuses) the bench model; prints its directory. $1 = 1 for the --quick shape.
bench_model() {
  local quick="$1" dir
  if [ "$quick" = 1 ]; then dir="$QS_BENCH_DIR/llama-quick"; else dir="$QS_BENCH_DIR/llama-1b"; fi
  mkdir -p "$QS_BENCH_DIR"
  "$QS_ROOT/.venv/bin/python" "$QS_ROOT/bench/make_bench_model.py" --out "$dir" \
    ${QS_BENCH_SEED:+--seed "$QS_BENCH_SEED"} $([ "$quick" = 1 ] && echo --quick) >&2
  echo "$dir"
}
