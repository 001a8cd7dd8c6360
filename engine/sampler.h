#pragma once
// Sampler: picks the next token from float32 logits with transformers' processing order
// (repetition penalty, then temperature, top-k, top-p), and reports log-probabilities of the
// model's own distribution (log_softmax of the raw logits).
//
// Randomness comes from a per-request mt19937_64 seeded from `seed` (or the OS when absent), so
// a seed reproduces the same tokens regardless of what else runs. One sampler per sequence.

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
  SamplingParams params_;
  int32_t top_n_;
  std::mt19937_64 rng_;
};

}  // namespace quantserve::engine
