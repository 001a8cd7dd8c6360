#!/usr/bin/env bash
# Fuzzes every parser of untrusted input with libFuzzer under ASan + UBSan (fuzz/):
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
# Builds with clang in build-fuzz/ (ccache), seeds each corpus from the repository's models,
# configs and fixtures, runs each target for the given time and prints executions, coverage
# and findings. Exits 1 when a target crashed (the crashing input is kept in
# build-fuzz/findings/). The corpora grow in $QS_CACHE_DIR/fuzz-corpus and are reused.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set -euo pipefail
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_safetensors fuzz_checkpoint_index fuzz_tokenizer_json
  fuzz_tokenizer_encode fuzz_model_config fuzz_startup_config fuzz_quant_configs)

ensure_venv >/dev/null
dir="$QS_ROOT/build-fuzz"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}" CCACHE_BASEDIR="$QS_ROOT" CCACHE_NOHASHDIR=1
if [ ! -f "$dir/build.ninja" ]; then
  flags="-fsanitize=address,undefined -fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
  CC=clang CXX=clang++ cmake -S "$QS_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DQS_FUZZ=ON -DQS_BUILD_TESTS=OFF -DQS_BUILD_SERVER=OFF \
    -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
fi
log "building ${targets[*]} in $dir"
cmake --build "$dir" -j "$QS_JOBS" --target "${targets[@]}"

fixtures="${QS_FIXTURES_DIR:-$QS_CACHE_DIR/fixtures}"
corpus_root="$QS_CACHE_DIR/fuzz-corpus"
findings="$dir/findings"
mkdir -p "$findings"
seed() {  # seed TARGET FILE...: copies existing files into the target's corpus
  local c="$corpus_root/$1"; shift
  mkdir -p "$c"
  for f in "$@"; do [ -f "$f" ] && cp -n "$f" "$c/seed-$(basename "$(dirname "$f")")-$(basename "$f")" || true; done
}
model="$QS_ROOT/assets/models/kjv-llama"
# Safetensors seeds: whole small files, and the header of the default model (its tensors cut).
small=$(find "$fixtures/safetensors" -name '*.safetensors' -size -64k 2>/dev/null | head -20)
seed fuzz_safetensors $small
python3 - "$model/model.safetensors" "$corpus_root/fuzz_safetensors/seed-kjv-header" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]
open(sys.argv[2], "wb").write(b[:8 + n])
PY
seed fuzz_checkpoint_index $(find "$fixtures" -name 'model.safetensors.index.json' 2>/dev/null | head -5)
seed fuzz_tokenizer_json "$model/tokenizer.json" "$fixtures/minilm/tokenizer.json"
seed fuzz_tokenizer_encode "$QS_ROOT/README.md" "$model/heldout.txt"
seed fuzz_model_config "$model/config.json" $(find "$fixtures" -maxdepth 3 -name config.json 2>/dev/null | head -10)
seed fuzz_startup_config "$QS_ROOT"/deploy/examples/*.json
seed fuzz_quant_configs $(find "$fixtures" -maxdepth 4 -name config.json 2>/dev/null | head -20)

status=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$corpus_root/$t"
  log "$t: ${seconds}s"
  set +e
  # Input sizes: text to encode stays short (long inputs only slow the search), whole
  # tokenizer.json files are as long as the seeds, the rest up to 64 KiB.
  case "$t" in
    fuzz_tokenizer_encode) max_len=4096 ;;
    fuzz_tokenizer_json) max_len=0 ;;
    *) max_len=65536 ;;
  esac
  QS_FIXTURES_DIR="$fixtures" "$dir/fuzz/$t" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=4096 -max_len="$max_len" -print_final_stats=1 \
    -artifact_prefix="$findings/$t-" "$corpus_root/$t" >"$findings/$t.log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$findings/$t.log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$findings/$t.log" | tail -1 | grep -o '[0-9]*' || echo 0)
  if [ $rc -ne 0 ]; then
    status=1
    summary+=("$t: CRASH after $execs executions (see $findings/$t.log)")
  else
    summary+=("$t: $execs executions, coverage $cov, 0 crashes")
  fi
done
printf '%s\n' "${summary[@]}"
exit $status
