#include "engine/sampler.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <vector>

namespace quantserve::engine {
namespace {

at::Tensor Logits(std::vector<float> v) { return at::tensor(v, at::kFloat); }

TEST(SamplerTest, GreedyPicksArgmaxAndReportsRawLogprob) {
  Sampler s(SamplingParams{}, 1);
  SampledToken t = s.Sample(Logits({0.1f, 2.0f, -1.0f, 1.5f}), {});
  EXPECT_EQ(t.token_id, 1);
  at::Tensor lp = at::log_softmax(Logits({0.1f, 2.0f, -1.0f, 1.5f}), 0);
  EXPECT_NEAR(t.logprob, lp[1].item<float>(), 1e-6);
  EXPECT_TRUE(t.top_logprobs.empty());
}

TEST(SamplerTest, GreedyTieTakesLowestId) {
  Sampler s(SamplingParams{}, 1);
  EXPECT_EQ(s.Sample(Logits({1.0f, 3.0f, 3.0f}), {}).token_id, 1);
}

TEST(SamplerTest, RepetitionPenaltyDemotesSeenTokens) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  Sampler s(p, 1);
  // Token 1 (score 2.0 -> 1.0 after penalty) loses to token 3 (1.5).
  EXPECT_EQ(s.Sample(Logits({0.1f, 2.0f, -1.0f, 1.5f}), {1}).token_id, 3);
  // Negative scores are multiplied: token 0 at -0.5 -> -1.0 loses to token 1 at -0.8.
  EXPECT_EQ(s.Sample(Logits({-0.5f, -0.8f}), {0}).token_id, 1);
}

TEST(SamplerTest, SameSeedSameTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 1234;
  at::Tensor logits = at::randn({500}, at::TensorOptions().dtype(at::kFloat));
  Sampler a(p, 1), b(p, 1);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(a.Sample(logits, {}).token_id, b.Sample(logits, {}).token_id);
  }
}

TEST(SamplerTest, DifferentSeedsDiverge) {
  SamplingParams p;
  p.temperature = 1.0f;
  at::Tensor logits = at::zeros({1000}, at::kFloat);  // uniform
  p.seed = 1;
  Sampler a(p, 1);
  p.seed = 2;
  Sampler b(p, 1);
  int same = 0;
  for (int i = 0; i < 50; ++i) same += a.Sample(logits, {}).token_id == b.Sample(logits, {}).token_id;
  EXPECT_LT(same, 10);
}

TEST(SamplerTest, TopKOneIsGreedy) {
  SamplingParams p;
  p.temperature = 5.0f;
  p.top_k = 1;
  p.seed = 7;
  Sampler s(p, 1);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.Sample(Logits({0.0f, 0.5f, 0.4f}), {}).token_id, 1);
}

TEST(SamplerTest, TopPKeepsOnlyTheNucleus) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.5f;
  p.seed = 3;
  Sampler s(p, 1);
  // p = [0.6, 0.2, 0.2]: the nucleus at 0.5 is token 0 alone.
  at::Tensor logits = at::log(at::tensor({0.6f, 0.2f, 0.2f}));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.Sample(logits, {}).token_id, 0);
}

TEST(SamplerTest, SamplingFollowsTheDistribution) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 99;
  Sampler s(p, 1);
  at::Tensor logits = at::log(at::tensor({0.7f, 0.2f, 0.1f}));
  std::map<int, int> counts;
  const int n = 4000;
  for (int i = 0; i < n; ++i) counts[s.Sample(logits, {}).token_id]++;
  EXPECT_NEAR(counts[0] / double(n), 0.7, 0.03);
  EXPECT_NEAR(counts[1] / double(n), 0.2, 0.03);
  EXPECT_NEAR(counts[2] / double(n), 0.1, 0.03);
}

TEST(SamplerTest, TopLogprobsAreSortedAndExact) {
  Sampler s(SamplingParams{}, 3);
  SampledToken t = s.Sample(Logits({0.1f, 2.0f, -1.0f, 1.5f}), {});
  ASSERT_EQ(t.top_logprobs.size(), 3u);
  EXPECT_EQ(t.top_logprobs[0].token_id, 1);
  EXPECT_EQ(t.top_logprobs[1].token_id, 3);
  EXPECT_EQ(t.top_logprobs[2].token_id, 0);
  EXPECT_GT(t.top_logprobs[0].logprob, t.top_logprobs[1].logprob);
  EXPECT_FLOAT_EQ(t.top_logprobs[0].logprob, t.logprob);
}

}  // namespace
}  // namespace quantserve::engine

namespace quantserve::engine {
namespace {

TEST(SamplerTest, TinyTemperatureIsGreedyNotNaN) {
  SamplingParams p;
  p.temperature = 1e-30f;
  p.seed = 5;
  Sampler s(p, 1);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(s.Sample(at::tensor({0.1f, 2.0f, -1.0f, 1.5f}), {}).token_id, 1);
  }
}

TEST(SamplerTest, TopKWithTiesIsDeterministicById) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  p.seed = 11;
  Sampler s(p, 1);
  // Three tied best tokens: top_k=2 keeps ids 1 and 2, never 3.
  for (int i = 0; i < 200; ++i) {
    int id = s.Sample(at::tensor({-5.0f, 1.0f, 1.0f, 1.0f}), {}).token_id;
    EXPECT_TRUE(id == 1 || id == 2) << id;
  }
}

}  // namespace
}  // namespace quantserve::engine

namespace quantserve::engine {
namespace {

// The set a top-k/top-p draw may return, by the plain formula: sort the whole vocabulary
// (ties by id), keep k, then the smallest prefix whose normalized mass reaches p.
std::vector<int32_t> AllowedRef(const std::vector<float>& logits, float temperature, int32_t k,
                                float p) {
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  if (k > 0 && static_cast<size_t>(k) < order.size()) order.resize(k);
  std::vector<double> w;
  double total = 0;
  for (int32_t id : order) {
    w.push_back(std::exp((logits[id] - logits[order[0]]) / static_cast<double>(temperature)));
    total += w.back();
  }
  double mass = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    mass += w[i] / total;
    if (mass >= p) {
      order.resize(i + 1);
      break;
    }
  }
  return order;
}

// top-p alone over a 32000-entry vocabulary (the growing partial sorts), top-k + top-p and
// plain sampling: every draw is in the formula's allowed set, and over many draws every id of a
// small nucleus shows up.
TEST(SamplerTest, TopPAndTopKMatchTheSortedFormulaOnALargeVocabulary) {
  at::manual_seed(21);
  struct Case {
    float temperature;
    int32_t top_k;
    float top_p;
  };
  for (const Case& c : {Case{1.0f, 0, 0.9f}, Case{0.7f, 0, 0.5f}, Case{1.3f, 0, 0.999f},
                        Case{1.0f, 50, 0.8f}, Case{1.0f, 2000, 0.95f}, Case{1.0f, 40, 1.0f}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << c.temperature << " k=" << c.top_k
                                      << " p=" << c.top_p);
    // A peaked head over a long flat tail, as a language model's logits look.
    at::Tensor t = at::randn({32000}) * 2;
    t.narrow(0, 100, 20) += 6;
    const std::vector<float> logits(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
    const std::vector<int32_t> allowed = AllowedRef(logits, c.temperature, c.top_k, c.top_p);
    const std::set<int32_t> allowed_set(allowed.begin(), allowed.end());
    SamplingParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.seed = 17;
    Sampler s(p, 1);
    std::set<int32_t> seen;
    for (int i = 0; i < 400; ++i) {
      const int32_t id = s.Sample(t, {}).token_id;
      EXPECT_EQ(allowed_set.count(id), 1u) << id;
      seen.insert(id);
    }
    if (allowed.size() <= 20) {
      EXPECT_GE(seen.size(), allowed.size() / 2);
    }
  }
}

TEST(SamplerTest, LogprobEqualsLogSoftmaxOnALargeVocabulary) {
  at::manual_seed(22);
  const at::Tensor t = at::randn({50000}) * 3;
  const at::Tensor lp = at::log_softmax(t, 0);
  Sampler s(SamplingParams{}, 5);
  const SampledToken tok = s.Sample(t, {});
  EXPECT_EQ(tok.token_id, t.argmax().item<int64_t>());
  EXPECT_NEAR(tok.logprob, lp[tok.token_id].item<float>(), 1e-5);
  auto [values, indices] = at::topk(lp, 5);
  ASSERT_EQ(tok.top_logprobs.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(tok.top_logprobs[i].token_id, indices[i].item<int64_t>());
    EXPECT_NEAR(tok.top_logprobs[i].logprob, values[i].item<float>(), 1e-5);
  }
}

}  // namespace
}  // namespace quantserve::engine
