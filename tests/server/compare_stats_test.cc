#include "server/compare_stats.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace quantserve::server {
namespace {

std::vector<float> LogRow(std::vector<double> p) {
  std::vector<float> out;
  for (double v : p) out.push_back(static_cast<float>(std::log(v)));
  return out;
}

TEST(CompareStatsTest, IdenticalDistributionsGiveZeroDivergence) {
  QualityAccumulator acc;
  const std::vector<float> row = LogRow({0.1, 0.2, 0.3, 0.4});
  for (int32_t t : {0, 1, 2, 3, 3}) acc.Add(row.data(), row.data(), 4, t);
  const QualityStats s = acc.Finish();
  EXPECT_EQ(s.tokens, 5);
  EXPECT_LT(s.kl_mean, 1e-9);
  EXPECT_EQ(s.kl_max, 0.0);
  EXPECT_DOUBLE_EQ(s.same_top1, 1.0);
  EXPECT_NEAR(s.ppl_ratio, 1.0, 1e-12);
  EXPECT_NEAR(s.perplexity, s.base_perplexity, 1e-9);
  EXPECT_NEAR(s.logprob_correlation, 1.0, 1e-9);
  EXPECT_EQ(s.dp_rms, 0.0);
}

TEST(CompareStatsTest, MatchesAHandComputation) {
  // base (0.5, 0.5) against Q (0.25, 0.75), actual next token 1.
  QualityAccumulator acc;
  const std::vector<float> b = LogRow({0.5, 0.5});
  const std::vector<float> q = LogRow({0.25, 0.75});
  acc.Add(b.data(), q.data(), 2, 1);
  // base (0.9, 0.1) against itself, token 0: no divergence, same top-1.
  const std::vector<float> c = LogRow({0.9, 0.1});
  acc.Add(c.data(), c.data(), 2, 0);
  const QualityStats s = acc.Finish();
  const double kl0 = 0.5 * std::log(0.5 / 0.25) + 0.5 * std::log(0.5 / 0.75);
  EXPECT_NEAR(s.kl_mean, kl0 / 2, 1e-6);
  EXPECT_NEAR(s.kl_max, kl0, 1e-6);
  EXPECT_NEAR(s.kl_median, kl0 / 2, 1e-6);  // interpolated between 0 and kl0
  EXPECT_NEAR(s.kl_err, kl0 / 2, 1e-6);     // stddev kl0/sqrt(2), over sqrt(2)
  EXPECT_NEAR(s.dp_mean, 0.25 / 2, 1e-6);
  EXPECT_NEAR(s.dp_rms, std::sqrt(0.25 * 0.25 / 2), 1e-6);
  // ln PPL(Q)/PPL(base) = mean(b[t] - q[t]) = (ln 0.5 - ln 0.75 + 0) / 2.
  EXPECT_NEAR(s.mean_ln_ratio, std::log(0.5 / 0.75) / 2, 1e-6);
  EXPECT_NEAR(s.ppl_ratio, std::exp(std::log(0.5 / 0.75) / 2), 1e-6);
  // argmax of (0.5, 0.5) is the first entry, of (0.25, 0.75) the second: one of two agrees.
  EXPECT_DOUBLE_EQ(s.same_top1, 0.5);
  ASSERT_EQ(s.kl_per_token.size(), 2u);
  EXPECT_NEAR(s.kl_per_token[0], kl0, 1e-6);
}

TEST(CompareStatsTest, QuantileInterpolates) {
  EXPECT_DOUBLE_EQ(Quantile({4, 1, 3, 2}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(Quantile({4, 1, 3, 2}, 1.0), 4);
  EXPECT_DOUBLE_EQ(Quantile({4, 1, 3, 2}, 0.0), 1);
  EXPECT_DOUBLE_EQ(Quantile({}, 0.5), 0);
}

}  // namespace
}  // namespace quantserve::server
