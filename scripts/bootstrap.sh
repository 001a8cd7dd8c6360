#!/usr/bin/env bash
# Installs everything quantserve needs on a fresh Debian bookworm machine, idempotently:
# Debian packages, the pinned Python venv (LibTorch comes from its torch wheel), then builds.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_apt
ensure_venv
build "$@"
