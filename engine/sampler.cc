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

  // Processed scores: a reused buffer, so the reported logprobs stay those of the model.
  scores_.assign(logits, logits + vocab);
  if (params_.repetition_penalty != 1.0f) {
    for (int32_t id : history) {
      if (id < 0 || id >= vocab) continue;
      // Each id once, however often it repeats: the raw logit decides the direction.
      const float raw_score = logits[id];
      scores_[id] = raw_score < 0 ? raw_score * params_.repetition_penalty
                                  : raw_score / params_.repetition_penalty;
    }
  }

  int32_t chosen = 0;
  // Below this temperature the distribution is a point mass in float arithmetic; dividing by
  // it would overflow to inf and turn the weights into NaN.
  constexpr float kGreedyBelow = 1e-5f;
  if (params_.temperature < kGreedyBelow) {
    // Greedy: first maximum, as torch.argmax.
    chosen = static_cast<int32_t>(std::max_element(scores_.begin(), scores_.end()) -
                                  scores_.begin());
  } else {
    chosen = SampleFromScores();
  }

  SampledToken out;
  out.token_id = chosen;
  // log p(chosen) = logit - logsumexp(logits): one pass, no log_softmax tensor.
  const float max_logit = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max_logit));
  const double lse = max_logit + std::log(sum);
  out.logprob = static_cast<float>(logits[chosen] - lse);
  if (top_n_ > 1) {
    const int64_t k = std::min<int64_t>(top_n_, vocab);
    order_.resize(vocab);
    std::iota(order_.begin(), order_.end(), 0);
    auto better = [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), better);
    out.top_logprobs.reserve(k);
    for (int64_t i = 0; i < k; ++i) {
      out.top_logprobs.push_back({order_[i], static_cast<float>(logits[order_[i]] - lse)});
    }
  }
  return out;
}

int32_t Sampler::SampleFromScores() {
  const int64_t vocab = static_cast<int64_t>(scores_.size());
  const float max_score = *std::max_element(scores_.begin(), scores_.end());
  // Unnormalized probabilities exp((s - max) / T), by id.
  weights_.resize(vocab);
  for (int64_t i = 0; i < vocab; ++i) {
    weights_[i] = std::exp((static_cast<double>(scores_[i]) - max_score) / params_.temperature);
  }
  // Ties break by id, so the order (and the sampled token) does not depend on the algorithm.
  auto better = [&](int32_t a, int32_t b) {
    return scores_[a] > scores_[b] || (scores_[a] == scores_[b] && a < b);
  };
  order_.resize(vocab);
  std::iota(order_.begin(), order_.end(), 0);
  size_t keep = order_.size();
  size_t sorted = 0;  // order_[0, sorted) is the best `sorted` ids, best first
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
    // top-k: select the k best in O(V), then order only them.
    keep = params_.top_k;
    std::nth_element(order_.begin(), order_.begin() + keep, order_.end(), better);
    std::sort(order_.begin(), order_.begin() + keep, better);
    sorted = keep;
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += weights_[order_[i]];

  if (params_.top_p < 1.0f) {
    // Smallest prefix whose mass reaches top_p (always at least one token). Without top-k the
    // prefix comes from partial sorts of a growing size (64, 256, ...), so a peaked
    // distribution never sorts the whole vocabulary.
    double mass = 0;
    size_t cut = keep;
    size_t i = 0;
    for (size_t want = std::min<size_t>(64, keep); cut == keep && i < keep;
         want = std::min(keep, want * 4)) {
      if (sorted < want) {
        std::partial_sort(order_.begin() + sorted, order_.begin() + want, order_.begin() + keep,
                          better);
        sorted = want;
      }
      for (; i < sorted; ++i) {
        mass += weights_[order_[i]] / total;
        if (mass >= params_.top_p) {
          cut = i + 1;
          break;
        }
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
