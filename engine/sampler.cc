#include "engine/sampler.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace quantserve::engine {

Sampler::Sampler(const SamplingParams& params, int32_t top_n)
    : params_(params), top_n_(top_n), rng_(params.seed.has_value() ? *params.seed
                                                                  : std::random_device{}()) {}

SampledToken Sampler::Sample(const at::Tensor& logits_in, const std::vector<int32_t>& history) {
  // Logits already float32 on the CPU (the usual case) are read in place, not copied.
  const at::Tensor raw = logits_in.to(at::kCPU, at::kFloat).contiguous();
  const int64_t vocab = raw.numel();
  const float* logits = raw.const_data_ptr<float>();

  // Processed scores: the raw logits unless a penalty changes some, then a reused copy, so the
  // reported logprobs stay those of the model.
  const float* scores = logits;
  if (params_.repetition_penalty != 1.0f) {
    scores_.assign(logits, logits + vocab);
    for (int32_t id : history) {
      if (id < 0 || id >= vocab) continue;
      // Each id once, however often it repeats: the raw logit decides the direction.
      const float raw_score = logits[id];
      scores_[id] = raw_score < 0 ? raw_score * params_.repetition_penalty
                                  : raw_score / params_.repetition_penalty;
    }
    scores = scores_.data();
  }

  SampledToken out;
  // Below this temperature the distribution is a point mass in float arithmetic; dividing by
  // it would overflow to inf and turn the weights into NaN.
  constexpr float kGreedyBelow = 1e-5f;
  if (params_.temperature < kGreedyBelow) {
    // Greedy: first maximum, as torch.argmax.
    out.token_id = static_cast<int32_t>(std::max_element(scores, scores + vocab) - scores);
  } else {
    out.token_id = SampleFrom(scores, vocab);
  }
  if (top_n_ <= 0) return out;  // no logprobs asked for: no log-softmax

  // The model's raw distribution: one fused, vectorized log-softmax.
  const at::Tensor logprobs = at::log_softmax(raw, 0);
  const float* lp = logprobs.const_data_ptr<float>();
  out.logprob = lp[out.token_id];
  if (top_n_ > 1) {
    const int64_t k = std::min<int64_t>(top_n_, vocab);
    order_.resize(vocab);
    std::iota(order_.begin(), order_.end(), 0);
    auto better = [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    std::nth_element(order_.begin(), order_.begin() + (k - 1), order_.end(), better);
    std::sort(order_.begin(), order_.begin() + k, better);
    out.top_logprobs.reserve(k);
    for (int64_t i = 0; i < k; ++i) out.top_logprobs.push_back({order_[i], lp[order_[i]]});
  }
  return out;
}

int32_t Sampler::SampleFrom(const float* scores, int64_t vocab) {
  // Ties break by id, so the order (and the sampled token) does not depend on the algorithm.
  auto better = [&](int32_t a, int32_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  };
  order_.resize(vocab);
  std::iota(order_.begin(), order_.end(), 0);
  size_t keep = order_.size();
  // Unnormalized probabilities exp((s - max) / T), by id: for the k kept ids under top-k,
  // else for every id with ATen's vectorized exp.
  weights_.resize(vocab);
  bool ordered = false;  // order_[0, keep) is sorted best first
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
    // top-k: the k best in order. A heap (partial_sort) rejects most of a large vocabulary
    // with one comparison each, which beats nth_element while k is small against V.
    keep = params_.top_k;
    ordered = true;
    if (keep * 64 <= order_.size()) {
      std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), better);
    } else {
      std::nth_element(order_.begin(), order_.begin() + (keep - 1), order_.end(), better);
      std::sort(order_.begin(), order_.begin() + keep, better);
    }
    const double max_score = scores[order_[0]];
    for (size_t i = 0; i < keep; ++i) {
      weights_[order_[i]] = static_cast<float>(
          std::exp((static_cast<double>(scores[order_[i]]) - max_score) / params_.temperature));
    }
  } else {
    const float max_score = *std::max_element(scores, scores + vocab);
    std::copy(scores, scores + vocab, weights_.begin());
    at::from_blob(weights_.data(), {vocab}, at::kFloat)
        .sub_(max_score)
        .div_(params_.temperature)
        .exp_();
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += weights_[order_[i]];

  if (params_.top_p < 1.0f) {
    // Smallest prefix (by score) whose mass reaches top_p; always at least one token. Without
    // top-k, the best `want` ids are selected in O(V) (nth_element) for want = 64, 256, ...
    // until they hold the mass; only that prefix is sorted.
    const double need = params_.top_p * total;
    size_t selected = 0;  // order_[0, selected) are the best `selected` ids (unordered)
    double mass = 0;
    size_t want = keep;
    if (!ordered) {
      for (want = std::min<size_t>(64, keep);; want = std::min(keep, want * 4)) {
        if (want < keep) {
          std::nth_element(order_.begin() + selected, order_.begin() + (want - 1),
                           order_.begin() + keep, better);
        }
        for (size_t i = selected; i < want; ++i) mass += weights_[order_[i]];
        selected = want;
        if (mass >= need || want == keep) break;
      }
      std::sort(order_.begin(), order_.begin() + want, better);
    }
    double prefix = 0;
    size_t cut = want;
    for (size_t i = 0; i < want; ++i) {
      prefix += weights_[order_[i]];
      if (prefix / total >= params_.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    total = 0;
    for (size_t j = 0; j < keep; ++j) total += weights_[order_[j]];
  }
  // Plain sampling (no top-k/top-p) walks ids in id order: any fixed order is correct, and
  // sorting the vocabulary would cost O(V log V) per token.
  std::uniform_real_distribution<double> uniform(0.0, total);
  double u = uniform(rng_);
  for (size_t i = 0; i < keep; ++i) {
    u -= weights_[order_[i]];
    if (u < 0) return order_[i];
  }
  return order_[keep - 1];
}

}  // namespace quantserve::engine
