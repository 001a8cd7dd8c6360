#!/usr/bin/env bash
# Builds and runs the LibTorch-free test executables under a sanitizer with clang:
#   scripts/sanitize.sh asan    AddressSanitizer + UndefinedBehaviorSanitizer (leaks included)
#   scripts/sanitize.sh tsan    ThreadSanitizer
# in build-asan/ or build-tsan/ (ccache). Every translation unit of ours is also compiled with
# clang's -Wthread-safety (as errors), which checks the ABSL_GUARDED_BY annotations.
# The tests: common_test, server_test (the gRPC server, registry, routes, auth, TLS, churn,
# with fake models) and cli_test. The LibTorch-linked tests are not run here: LibTorch and its
# OpenMP runtime are not instrumented, which TSan cannot work with and ASan only partly.
# Suppressions (scripts/sanitize-suppressions/) cover third-party code only, each explained.
#
# TSan and Debian's Abseil: libabsl_synchronization.so is not built with -fsanitize=thread, so
# TSan cannot see absl::Mutex lock and unlock (they are futexes and atomics inside the
# uninstrumented library) and reports every access guarded by an absl::Mutex as a race; the
# first report is always inside absl::Condition. A meaningful TSan run needs Abseil (and gRPC,
# which links it) rebuilt with TSan; until then `tsan` documents the limitation rather than
# checking our code. ASan+UBSan+LSan do not have this problem.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set -euo pipefail
kind="${1:-}"
case "$kind" in
  asan) flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined" ;;
  tsan) flags="-fsanitize=thread" ;;
  *) echo "usage: scripts/sanitize.sh asan|tsan" >&2; exit 2 ;;
esac
ensure_venv >/dev/null
dir="$QS_ROOT/build-$kind"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}" CCACHE_BASEDIR="$QS_ROOT" CCACHE_NOHASHDIR=1
if [ ! -f "$dir/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S "$QS_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS="$flags -fno-omit-frame-pointer -Wthread-safety" \
    -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
fi
targets=(common_test server_test cli_test)
log "building ${targets[*]} with $kind in $dir"
cmake --build "$dir" -j "$QS_JOBS" --target "${targets[@]}"

supp="$QS_ROOT/scripts/sanitize-suppressions"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$supp/lsan.txt"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.txt"
export QS_FIXTURES_DIR="${QS_FIXTURES_DIR:-$QS_CACHE_DIR/fixtures}"
status=0
for t in "${targets[@]}"; do
  bin="$(find "$dir/tests" -name "$t" -type f -perm -u+x | head -1)"
  log "$kind: $t"
  start=$(date +%s)
  if "$bin" >"$dir/$t.log" 2>&1; then
    echo "$kind $t: passed in $(( $(date +%s) - start )) s ($(grep -c '^\[       OK' "$dir/$t.log" || true) tests reported OK; log $dir/$t.log)"
  else
    status=1
    echo "$kind $t: FAILED (see $dir/$t.log)"
    grep -m5 -E "ERROR: (Address|Thread|Leak)Sanitizer|runtime error|WARNING: ThreadSanitizer|FAILED" "$dir/$t.log" || true
  fi
done
exit $status
