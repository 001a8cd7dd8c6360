#!/usr/bin/env bash
# Builds the quantserve image with buildah (no Docker daemon) and tests it with podman: the
# container starts, the default model loads and generates through the published port, and
# SIGTERM drains it to exit 0. Not part of the test suite (a cold image build takes tens of
# minutes on 2 cores).
#
#   scripts/image.sh [--tag quantserve:dev] [--no_test]
#
# No registry is needed: the Debian base is made locally with debootstrap (minbase bookworm),
# imported and tagged docker.io/library/debian:bookworm (and :bookworm-slim) once. Behind an
# intercepting HTTPS proxy set QS_IMAGE_CA to its CA bundle (passed as the build secret `ca`).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set -euo pipefail
tag="quantserve:dev" test=1
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift ;;
    --no_test) test=0 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument $1 (see --help)"; exit 2 ;;
  esac
  shift
done
APT_PACKAGES+=(buildah podman runc debootstrap uidmap fuse-overlayfs)
ensure_apt

if ! podman image exists docker.io/library/debian:bookworm; then
  log "making the Debian bookworm base image with debootstrap (first time only)"
  root="$(mktemp -d)"
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
  tar -C "$root" -c . | podman import - docker.io/library/debian:bookworm >/dev/null
  rm -rf "$root"
fi
podman image exists docker.io/library/debian:bookworm-slim ||
  podman tag docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim

secret=()
ca="${QS_IMAGE_CA:-/etc/ssl/certs/ca-certificates.crt}"
[ -s "$ca" ] && secret=(--secret "id=ca,src=$ca")
log "building $tag"
start=$SECONDS
# Docker format: OCI images cannot carry the Dockerfile's SHELL.
buildah bud --isolation chroot --layers --format docker "${secret[@]}" -t "$tag" "$QS_ROOT"
log "built $tag in $((SECONDS - start)) s; size $(podman image inspect "$tag" --format '{{.Size}}') bytes"
[ "$test" = 1 ] || exit 0

build quantserve-cli
cli="$QS_BUILD_DIR/cli/quantserve-cli"
name="quantserve-image-test"
podman rm -f "$name" >/dev/null 2>&1 || true
port=50190
# runc (not crun); file and process limits set explicitly and low (this VM's runc may not set
# them to the host's values inside the container's namespaces); no systemd timer for the
# image's HEALTHCHECK (the test polls instead).
podman run -d --runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --no-healthcheck \
  --name "$name" -p "127.0.0.1:$port:50051" "$tag" >/dev/null
trap 'podman rm -f "$name" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 60); do
  "$cli" --server="127.0.0.1:$port" --timeout_seconds=2 get kjv-llama 2>/dev/null | grep -q READY && break
  sleep 2
done
out="$("$cli" --server="127.0.0.1:$port" generate kjv-llama "In the beginning" --max_new_tokens=8)"
[ -n "$out" ] || { log "generate returned nothing"; podman logs "$name" | tail -20; exit 1; }
log "generated: $out"
podman stop -t 30 "$name" >/dev/null   # SIGTERM, then the drain
code="$(podman inspect "$name" --format '{{.State.ExitCode}}')"
[ "$code" = 0 ] || { log "exit code $code after SIGTERM"; podman logs "$name" | tail -20; exit 1; }
log "image test passed: loaded, generated, drained on SIGTERM with exit 0"
