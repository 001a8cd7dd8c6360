#pragma once
// Sampler: picks the next token from float32 logits with transformers' processing order
// (repetition penalty, then temperature, top-k, top-p), and reports log-probabilities of the
// model's own distribution (log_softmax of the raw logits).
//
// Randomness comes from a per-request mt19937_64 seeded from `seed` (or the OS when absent), so
// a seed reproduces the same tokens regardless of what else runs. One sampler per sequence.
//
// Cost per token is O(V) plus O(k log k) for top-k and O(p log p) for a top-p prefix of p
// tokens: greedy is an argmax, top-k an nth_element, top-p alone selects growing prefixes
// (64, 256, ...) until they hold the mass and sorts only that one; the log-softmax runs only
// when logprobs are asked for (top_n > 0), and the buffers are reused across tokens.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <random>
#include <vector>

#include "engine/engine_api.h"

namespace quantserve::engine {

struct SampledToken {
  int32_t token_id = 0;
  float logprob = 0;                      // under the raw distribution (0 when top_n == 0)
  std::vector<TokenLogprob> top_logprobs;  // best `top_n` under the raw distribution
};

class Sampler {
 public:
  Sampler(const SamplingParams& params, int32_t top_n);

  // `logits` is [vocab] float32 on any device; `history` holds the prompt and generated ids
  // (for the repetition penalty).
  SampledToken Sample(const at::Tensor& logits, const std::vector<int32_t>& history);

 private:
  // Temperature, top-k, top-p and the draw over `scores` (already penalized).
  int32_t SampleFrom(const float* scores, int64_t vocab);

  SamplingParams params_;
  int32_t top_n_;
  std::mt19937_64 rng_;
  // Per-token scratch, kept to avoid allocations.
  std::vector<float> scores_;
  std::vector<float> weights_;
  std::vector<int32_t> order_;
};

}  // namespace quantserve::engine
