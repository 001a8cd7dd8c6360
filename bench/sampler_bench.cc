// qs_sampler_bench: engine::Sampler::Sample per token against the same processing written as
// ATen tensor ops the way transformers' logits processors do it (repetition penalty by
// gather/scatter, temperature, top-k, sort + softmax + cumsum for top-p, multinomial, and a
// log_softmax for the reported logprob). Both are timed in interleaved rounds on the same
// logits; the median microseconds per token and the ratio are printed.
//
// Usage: qs_sampler_bench [rounds=15]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/sampler.h"

namespace qe = quantserve::engine;

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// transformers' order: repetition penalty, temperature, top-k, top-p, then multinomial.
int64_t SampleAten(const at::Tensor& logits, const at::Tensor& history,
                   const qe::SamplingParams& p) {
  at::Tensor scores = logits.clone();
  if (p.repetition_penalty != 1.0f) {
    const at::Tensor s = scores.gather(0, history);
    scores.scatter_(0, history,
                    at::where(s < 0, s * p.repetition_penalty, s / p.repetition_penalty));
  }
  const at::Tensor logprob = at::log_softmax(logits, 0);  // reported, as the server does
  if (p.temperature < 1e-5f) return scores.argmax().item<int64_t>() + 0 * logprob.numel();
  scores = scores / p.temperature;
  if (p.top_k > 0 && p.top_k < scores.numel()) {
    const at::Tensor kth = std::get<0>(at::topk(scores, p.top_k)).index({-1});
    scores = scores.masked_fill(scores < kth, -INFINITY);
  }
  if (p.top_p < 1.0f) {
    auto [sorted, idx] = at::sort(scores, 0, /*descending=*/false);
    const at::Tensor cum = sorted.softmax(0).cumsum(0);
    at::Tensor remove = cum <= (1 - p.top_p);
    remove.index_put_({-1}, false);
    scores = scores.scatter(0, idx, sorted.masked_fill(remove, -INFINITY));
  }
  return at::multinomial(scores.softmax(0), 1).item<int64_t>();
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 15;
  at::set_num_threads(1);
  at::manual_seed(0);
  struct Setting {
    const char* name;
    float temperature;
    int32_t top_k;
    float top_p;
    float repetition_penalty;
  };
  const std::vector<Setting> settings = {
      {"greedy", 0.f, 0, 1.f, 1.f},
      {"T=1 plain", 1.f, 0, 1.f, 1.f},
      {"T=0.8 top_k=50 top_p=0.95", 0.8f, 50, 0.95f, 1.f},
      {"T=1 top_p=0.9", 1.f, 0, 0.9f, 1.f},
      {"T=0.7 top_p=0.9 rep=1.1", 0.7f, 0, 0.9f, 1.1f},
  };
  std::printf("%-28s %8s %12s %12s %8s\n", "setting", "vocab", "ours us", "aten us", "ratio");
  for (int64_t vocab : {4096, 32000, 128256}) {
    // A peaked head over a long tail, like a language model's logits.
    at::Tensor logits = at::randn({vocab}) * 2;
    logits.narrow(0, 10, 20) += 6;
    std::vector<int32_t> history(256);
    for (int i = 0; i < 256; ++i) history[i] = (i * 7919) % static_cast<int32_t>(vocab);
    const at::Tensor history_t = at::tensor(std::vector<int64_t>(history.begin(), history.end()));
    for (const Setting& s : settings) {
      qe::SamplingParams p;
      p.temperature = s.temperature;
      p.top_k = s.top_k;
      p.top_p = s.top_p;
      p.repetition_penalty = s.repetition_penalty;
      p.seed = 1;
      qe::Sampler sampler(p, 1);
      const int iters = 50;
      std::vector<double> ours, aten;
      for (int r = 0; r < rounds; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < iters; ++i) sampler.Sample(logits, history);
        auto t1 = std::chrono::steady_clock::now();
        for (int i = 0; i < iters; ++i) SampleAten(logits, history_t, p);
        auto t2 = std::chrono::steady_clock::now();
        ours.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / iters);
        aten.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count() / iters);
      }
      std::printf("%-28s %8lld %12.1f %12.1f %7.2fx\n", s.name, static_cast<long long>(vocab),
                  Median(ours), Median(aten), Median(aten) / Median(ours));
    }
  }
  return 0;
}
