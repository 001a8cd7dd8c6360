#!/usr/bin/env bash
# Installs what is missing, builds everything, makes the test fixtures (cached by each
# script's hash) and runs the whole test suite with CTest.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_apt
ensure_venv
export QS_FIXTURES_DIR="${QS_FIXTURES_DIR:-$QS_CACHE_DIR/fixtures}"
"$QS_ROOT/scripts/make_fixtures.sh" "$QS_FIXTURES_DIR"
build
log "running tests (fixtures in $QS_FIXTURES_DIR)"
cd "$QS_BUILD_DIR"
ctest --output-on-failure -j "$QS_JOBS" --timeout 900
