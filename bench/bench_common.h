#pragma once
// Pieces the benchmarks share: the preset table (bench/presets.json), a STREAM-like read
// bandwidth probe, a synchronous timed generation on the engine API, and small statistics.
//
// Benchmarks see the engine only through engine/engine_api.h (no LibTorch, no gRPC here).
// Thread-safety: every function may be called from any thread; none keeps state.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine_api.h"

namespace quantserve::bench {

// One row of bench/presets.json: how to load the model for one measured configuration.
struct Preset {
  std::string name;                      // e.g. "bnb_nf4"
  std::string dtype;                     // LoadOptions::dtype
  std::string quantization_config_json;  // "" = float (no quantization)
  // Bytes per linear weight a decode step reads x 8, scales and zeros included; 0 = unknown.
  double bits_per_weight = 0;
  // LoadOptions::activation_bits: 8 for "kernel_activations": "int8" rows, else 16.
  int activation_bits = 16;
};

// Reads the preset table. Errors: NOT_FOUND (no file), INVALID_ARGUMENT (bad JSON or row).
absl::StatusOr<std::vector<Preset>> ReadPresets(const std::string& path);
// The presets named in `csv` ("fp32,bf16,hqq4"), in that order. Errors: INVALID_ARGUMENT
// naming an unknown preset (and listing the known ones) or an empty list.
absl::StatusOr<std::vector<Preset>> SelectPresets(const std::vector<Preset>& all,
                                                  const std::string& csv);

// Sustained read bandwidth of `threads` threads summing disjoint slices of one `bytes`
// buffer (AVX2 loads where the CPU has them), best of `passes` after one warm pass, like
// STREAM's best-of reporting. The buffer is first-touched by the same threads.
struct ReadBandwidth {
  double gb_per_s = 0;  // 1e9 bytes per second
  int64_t bytes = 0;
  int threads = 0;
  int passes = 0;
  bool avx2 = false;
};
ReadBandwidth MeasureReadBandwidth(int64_t bytes, int threads, int passes);

// One generation run to completion, with the arrival time of every token.
struct TimedGeneration {
  double time_to_first_token_s = 0;  // submit -> first token chunk
  double total_s = 0;                // submit -> OnFinish
  std::vector<double> token_times_s;  // arrival of each token, from submit (chunk's time for
                                      // every token it carries)
  engine::GenerateFinish finish;
  // Tokens/s after the first token: (n - 1) / (last - first); 0 when n < 2.
  double DecodeTokensPerSecond() const;
};
// Submits `params` to `model` and blocks until OnFinish. Errors: the generation's own.
absl::StatusOr<TimedGeneration> RunGeneration(engine::ServableModel& model,
                                              engine::GenerateParams params);

// `n` token ids drawn uniformly from [2, vocab) (ids 0 and 1 are BOS/EOS in the bench
// tokenizer), reproducible from `seed`.
std::vector<int32_t> RandomTokenIds(int n, int64_t vocab, uint64_t seed);

// Linear-interpolated percentile (numpy's default), p in [0, 100]; 0 for an empty input.
double Percentile(std::vector<double> values, double p);
double Median(std::vector<double> values);

// This process's resident set size in bytes (0 when /proc is unreadable).
int64_t CurrentRssBytes();

// "12.3" style fixed formatting used in the markdown tables.
std::string Fixed(double value, int decimals);

}  // namespace quantserve::bench
