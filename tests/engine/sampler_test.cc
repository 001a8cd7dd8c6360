#include "engine/sampler.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

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
