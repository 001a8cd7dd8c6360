#pragma once
// Sampler: picks the next token from float32 logits with transformers' processing order
// (repetition penalty, then temperature, top-k, top-p), and reports log-probabilities of the
// model's own distribution (log_softmax of the raw logits).
//
// Randomness comes from a per-request mt19937_64 seeded from `seed` (or the OS when absent), so
// a seed reproduces the same tokens regardless of what else runs. One sampler per sequence.
//
// Cost per token is O(V) plus O(k log k) for top-k and O(p log p) for a top-p prefix of p
// tokens: greedy is an argmax, top-k an nth_element, top-p alone grows partial sorts until the
// prefix holds the mass, and the buffers are reused across tokens (no per-token allocation
// beyond the returned top logprobs).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <random>
#include <vector>

#include "engine/engine_api.h"

namespace quantserve::engine {

struct SampledToken {
  int32_t token_id = 0;
  float logprob = 0;                      // under the raw distribution
  std::vector<TokenLogprob> top_logprobs;  // best `top_n` under the raw distribution
};

class Sampler {
 public:
  Sampler(const SamplingParams& params, int32_t top_n);

  // `logits` is [vocab] float32 on any device; `history` holds the prompt and generated ids
  // (for the repetition penalty).
  SampledToken Sample(const at::Tensor& logits, const std::vector<int32_t>& history);

 private:
  // Temperature, top-k, top-p and the draw over scores_ (already penalized).
  int32_t SampleFromScores();

  SamplingParams params_;
  int32_t top_n_;
  std::mt19937_64 rng_;
  // Per-token scratch, kept to avoid allocations.
  std::vector<float> scores_;
  std::vector<double> weights_;
  std::vector<int32_t> order_;
};

}  // namespace quantserve::engine
