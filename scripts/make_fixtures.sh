#!/usr/bin/env bash
# Makes the test fixtures: runs every tests/fixtures/make_*.py with the project venv's python
# as `make_X.py --out OUT_DIR`, each one cached.
#
# usage: scripts/make_fixtures.sh [OUT_DIR]        (default: tests/fixtures/out, gitignored)
#   env: PYTHON (default .venv/bin/python), FIXTURE_THREADS (default 2), FORCE=1 (rerun all)
#
# Cache: OUT/.stamps/<script>.sha256 holds the sha256 of the script, of the helper modules in
# tests/fixtures it imports, and of the venv's installed package list. A script is skipped when
# that key is unchanged and every file it wrote last time (OUT/.stamps/<script>.files) still
# exists. A failing script leaves no stamp; the others still run; the exit status is then 1.
# Runs are serialized with flock on OUT/.stamps/lock (parallel test runs may call this).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/tests/fixtures/out}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
THREADS="${FIXTURE_THREADS:-2}"
FIXDIR="$ROOT/tests/fixtures"

if [[ ! -x "$PY" ]]; then
  echo "make_fixtures: no python at $PY (create the venv or set PYTHON)" >&2
  exit 2
fi

mkdir -p "$OUT/.stamps"
OUT="$(cd "$OUT" && pwd)"
STAMPS="$OUT/.stamps"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false PYTHONDONTWRITEBYTECODE=1
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS"
export OMP_WAIT_POLICY=PASSIVE
export CUDA_VISIBLE_DEVICES=""   # reference outputs are computed on CPU
export QS_FIXTURES_DIR="$OUT"    # for scripts that read the output root from the environment

if command -v flock >/dev/null 2>&1; then
  exec 9>"$STAMPS/lock"
  flock 9
fi

# Installed package names+versions of the venv (cheap: directory names only).
venv_key="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)"
if [[ -n "$venv_key" && -d "$venv_key" ]]; then
  venv_key="$(cd "$venv_key" && ls -d -- *.dist-info 2>/dev/null | sort | sha256sum | cut -d' ' -f1)"
fi

key_for() {  # sha256 over the script, the local helper modules it imports, and the venv key
  local script="$1" h
  {
    sha256sum "$script" | cut -d' ' -f1
    for h in "$FIXDIR"/*.py; do
      local mod
      mod="$(basename "$h" .py)"
      [[ "$mod" == make_* || "$mod" == train_* ]] && continue
      if grep -Eq "^[[:space:]]*(import|from)[[:space:]]+$mod\b" "$script"; then
        echo "$mod $(sha256sum "$h" | cut -d' ' -f1)"
      fi
    done
    echo "venv $venv_key"
  } | sha256sum | cut -d' ' -f1
}

outputs_present() {
  local list="$1" f
  [[ -s "$list" ]] || return 1
  while IFS= read -r f; do
    [[ -e "$OUT/$f" ]] || return 1
  done <"$list"
}

status=0
shopt -s nullglob
scripts=("$FIXDIR"/make_*.py)
if (( ${#scripts[@]} == 0 )); then
  echo "make_fixtures: no tests/fixtures/make_*.py found" >&2
  exit 2
fi
for script in "${scripts[@]}"; do
  name="$(basename "$script")"
  stamp="$STAMPS/$name.sha256"
  files="$STAMPS/$name.files"
  key="$(key_for "$script")"
  if [[ "${FORCE:-0}" != 1 && -f "$stamp" && "$(cat "$stamp")" == "$key" ]] && outputs_present "$files"; then
    echo "make_fixtures: $name up to date"
    continue
  fi
  rm -f "$stamp"
  echo "make_fixtures: running $name --out $OUT"
  marker="$STAMPS/$name.started"
  : >"$marker"
  sleep 1  # so that files written by the script are strictly newer than the marker
  start=$SECONDS
  if (cd "$ROOT" && "$PY" "$script" --out "$OUT"); then
    (cd "$OUT" && find . -path ./.stamps -prune -o -type f -newer "$marker" -print | sed 's|^\./||' | sort) >"$files"
    if [[ ! -s "$files" ]]; then
      echo "make_fixtures: $name wrote nothing under $OUT" >&2
      status=1
    else
      echo "$key" >"$stamp"
      echo "make_fixtures: $name done in $((SECONDS - start))s ($(wc -l <"$files") files)"
    fi
  else
    echo "make_fixtures: $name FAILED" >&2
    status=1
  fi
  rm -f "$marker"
done
exit $status
