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
  at::Tensor raw = logits_in.to(at::kCPU, at::kFloat).contiguous();
  const int64_t vocab = raw.numel();
  at::Tensor logprobs = at::log_softmax(raw, 0);
  const float* lp = logprobs.const_data_ptr<float>();

  // Processed scores (a copy, so reported logprobs stay those of the model).
  std::vector<float> scores(raw.const_data_ptr<float>(), raw.const_data_ptr<float>() + vocab);
  if (params_.repetition_penalty != 1.0f) {
    std::vector<bool> seen(vocab, false);
    for (int32_t id : history) {
      if (id >= 0 && id < vocab) seen[id] = true;
    }
    for (int64_t i = 0; i < vocab; ++i) {
      if (!seen[i]) continue;
      scores[i] = scores[i] < 0 ? scores[i] * params_.repetition_penalty
                                : scores[i] / params_.repetition_penalty;
    }
  }

  int32_t chosen = 0;
  // Below this temperature the distribution is a point mass in float arithmetic; dividing by
  // it would overflow to inf and turn the weights into NaN.
  constexpr float kGreedyBelow = 1e-5f;
  if (params_.temperature < kGreedyBelow) {
    // Greedy: first maximum, as torch.argmax.
    chosen = static_cast<int32_t>(std::max_element(scores.begin(), scores.end()) - scores.begin());
  } else {
    for (float& s : scores) s /= params_.temperature;
    std::vector<int32_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    // Ties break by id, so the order (and the sampled token) does not depend on the sort.
    auto better = [&](int32_t a, int32_t b) {
      return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
    };
    size_t keep = order.size();
    if (params_.top_k > 0) keep = std::min<size_t>(keep, params_.top_k);
    // Only the kept prefix needs ordering: O(V log k) instead of a full sort.
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), better);
    const float max_score = scores[order[0]];
    std::vector<double> probs(keep);
    double total = 0;
    for (size_t i = 0; i < keep; ++i) {
      probs[i] = std::exp(static_cast<double>(scores[order[i]]) - max_score);
      total += probs[i];
    }
    if (params_.top_p < 1.0f) {
      // Smallest prefix whose mass reaches top_p (always at least one token).
      double mass = 0;
      size_t cut = keep;
      for (size_t i = 0; i < keep; ++i) {
        mass += probs[i] / total;
        if (mass >= params_.top_p) {
          cut = i + 1;
          break;
        }
      }
      keep = cut;
      total = std::accumulate(probs.begin(), probs.begin() + keep, 0.0);
    }
    std::uniform_real_distribution<double> uniform(0.0, total);
    double u = uniform(rng_);
    size_t pick = keep - 1;
    for (size_t i = 0; i < keep; ++i) {
      u -= probs[i];
      if (u < 0) {
        pick = i;
        break;
      }
    }
    chosen = order[pick];
  }

  SampledToken out;
  out.token_id = chosen;
  out.logprob = lp[chosen];
  if (top_n_ > 1) {
    const int64_t k = std::min<int64_t>(top_n_, vocab);
    auto [values, indices] = at::topk(logprobs, k);
    const float* v = values.const_data_ptr<float>();
    const int64_t* ix = indices.const_data_ptr<int64_t>();
    for (int64_t i = 0; i < k; ++i) {
      out.top_logprobs.push_back({static_cast<int32_t>(ix[i]), v[i]});
    }
  }
  return out;
}

}  // namespace quantserve::engine
