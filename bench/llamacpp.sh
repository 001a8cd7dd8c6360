#!/usr/bin/env bash
# Side by side with llama.cpp on the same model and threads: decode and prefill tok/s of
# llama.cpp's BF16 / Q8_0 / Q4_0 / IQ4_NL against our bf16 / int8 / int4 / NF4 presets.
#
#   bench/llamacpp.sh [--quick] [--threads N] [--rounds N] [--prompt_tokens N] [--decode_tokens N]
#
# llama.cpp comes from the PyPI sdist of llama-cpp-python (pinned below), which vendors
# llama.cpp's sources and its converter: it is downloaded once into $QS_BENCH_DIR/llama.cpp and
# llama-bench / llama-quantize are built there with CMake, CPU only (several minutes on 2
# cores; not part of the test suite). The bench model is converted with bench/convert_to_gguf.py
# and quantized with llama-quantize. Each round runs llama-bench on every GGUF, then
# qs_decode_bench on the matching presets, so the two sides alternate under the same machine
# load; medians over the rounds are compared (bench/llamacpp_compare.py).
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

LLAMA_CPP_PYTHON_VERSION=0.3.36
quick=0 threads="$(nproc)" rounds=3 prompt="" decode=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --threads) threads="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    --prompt_tokens) prompt="$2"; shift ;;
    --decode_tokens) decode="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument $1 (see --help)"; exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then prompt="${prompt:-32}" decode="${decode:-16}"; else prompt="${prompt:-128}" decode="${decode:-64}"; fi

ensure_apt
ensure_venv
bench_build qs_decode_bench
model="$(bench_model "$quick")"

# llama.cpp sources and binaries (cached).
lc_root="$QS_BENCH_DIR/llama.cpp/$LLAMA_CPP_PYTHON_VERSION"
src="$lc_root/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
if [ ! -f "$src/CMakeLists.txt" ]; then
  log "downloading llama-cpp-python $LLAMA_CPP_PYTHON_VERSION (sdist with llama.cpp's sources)"
  mkdir -p "$lc_root"
  "$QS_ROOT/.venv/bin/pip" download -q --no-deps --no-binary :all: -d "$lc_root" \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
  tar -xzf "$lc_root/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$lc_root"
fi
bin="$lc_root/build/bin"
if [ ! -x "$bin/llama-bench" ] || [ ! -x "$bin/llama-quantize" ]; then
  log "building llama-bench and llama-quantize (CPU only; minutes on 2 cores)"
  cmake -S "$src" -B "$lc_root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON >/dev/null
  cmake --build "$lc_root/build" -j "$QS_JOBS" --target llama-bench llama-quantize >/dev/null
fi

# The model in GGUF: BF16 by the converter, the rest by llama-quantize (cached by model stamp).
gguf_dir="$model/gguf"
mkdir -p "$gguf_dir"
if [ ! -f "$gguf_dir/model-bf16.gguf" ] || [ "$model/bench_model.json" -nt "$gguf_dir/model-bf16.gguf" ]; then
  log "converting $model to GGUF"
  "$QS_ROOT/.venv/bin/python" "$QS_ROOT/bench/convert_to_gguf.py" "$src" "$model" \
    "$gguf_dir/model-bf16.gguf" >&2
  rm -f "$gguf_dir"/model-q*.gguf "$gguf_dir"/model-iq*.gguf
fi
# llama.cpp type : our preset (same bits, as close a scheme as our presets have).
# The _a8 presets are the same models with the opt-in int8-activation kernels
# (kernel_activations "int8"), the arithmetic llama.cpp's Q4_0/IQ4_NL dot products use.
pairs=(BF16:bf16 Q8_0:quanto_int8 Q4_0:quanto_int4 IQ4_NL:bnb_nf4 Q4_0:quanto_int4_a8
       IQ4_NL:bnb_nf4_a8)
for pair in "${pairs[@]}"; do
  t="${pair%%:*}" lower="$(echo "${pair%%:*}" | tr 'A-Z' 'a-z')"
  [ "$t" = BF16 ] && continue
  if [ ! -f "$gguf_dir/model-$lower.gguf" ]; then
    "$bin/llama-quantize" "$gguf_dir/model-bf16.gguf" "$gguf_dir/model-$lower.gguf" "$t" "$threads" >&2
  fi
done

out="${QS_BENCH_OUT:-$QS_BENCH_DIR/results/llamacpp-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
methods="$(printf '%s\n' "${pairs[@]}" | cut -d: -f2 | paste -sd, -)"
types="$(printf '%s\n' "${pairs[@]}" | cut -d: -f1 | awk '!seen[$0]++')"
for r in $(seq 1 "$rounds"); do
  for t in $types; do
    lower="$(echo "$t" | tr 'A-Z' 'a-z')"
    log "round $r: llama-bench $lower"
    "$bin/llama-bench" -m "$gguf_dir/model-$lower.gguf" -t "$threads" -p "$prompt" -n "$decode" \
      -r 1 -o json > "$out/llamacpp-$lower-$r.json"
  done
  log "round $r: qs_decode_bench $methods"
  "$QS_BUILD_DIR/bench/qs_decode_bench" --model "$model" --threads "$threads" \
    --prompt_tokens "$prompt" --decode_tokens "$decode" --repeats 1 --methods "$methods" \
    --stream_mib 256 --json "$out/ours-$r.json" > "$out/ours-$r.md"
done
"$QS_ROOT/.venv/bin/python" "$QS_ROOT/bench/llamacpp_compare.py" "$out" "${pairs[@]}" | tee "$out/compare.md"
log "results in $out"
