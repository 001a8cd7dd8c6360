#include "server/compare_stats.h"

#include <algorithm>
#include <cmath>

namespace quantserve::server {
namespace {

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

// Standard error of the mean.
double StdErr(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = Mean(v);
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / static_cast<double>(v.size() - 1) / static_cast<double>(v.size()));
}

}  // namespace

double Quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double pos = q * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(values.size() - 1, lo + 1);
  return values[lo] + (values[hi] - values[lo]) * (pos - static_cast<double>(lo));
}

void QualityAccumulator::Add(const float* base_row, const float* candidate_row, int64_t vocab,
                             int32_t target) {
  double kl = 0;
  int64_t base_top = 0, cand_top = 0;
  for (int64_t v = 0; v < vocab; ++v) {
    const double b = base_row[v];
    const double q = candidate_row[v];
    if (std::isfinite(b)) kl += std::exp(b) * (b - q);  // p_b = 0 terms add nothing
    if (base_row[v] > base_row[base_top]) base_top = v;
    if (candidate_row[v] > candidate_row[cand_top]) cand_top = v;
  }
  kl_.push_back(std::max(0.0, kl));  // float rounding can leave -1e-9
  base_lp_.push_back(base_row[target]);
  cand_lp_.push_back(candidate_row[target]);
  dp_.push_back(std::exp(static_cast<double>(candidate_row[target])) -
                std::exp(static_cast<double>(base_row[target])));
  same_top1_ += base_top == cand_top;
}

QualityStats QualityAccumulator::Finish() const {
  QualityStats s;
  const size_t n = kl_.size();
  s.tokens = static_cast<int64_t>(n);
  if (n == 0) return s;
  std::vector<double> ln_ratio(n);
  for (size_t i = 0; i < n; ++i) ln_ratio[i] = base_lp_[i] - cand_lp_[i];
  s.perplexity = std::exp(-Mean(cand_lp_));
  s.base_perplexity = std::exp(-Mean(base_lp_));
  s.mean_ln_ratio = Mean(ln_ratio);
  s.mean_ln_ratio_err = StdErr(ln_ratio);
  s.ppl_ratio = std::exp(s.mean_ln_ratio);
  s.ppl_ratio_err = s.ppl_ratio * s.mean_ln_ratio_err;
  {
    const double mb = Mean(base_lp_), mq = Mean(cand_lp_);
    double sbq = 0, sbb = 0, sqq = 0;
    for (size_t i = 0; i < n; ++i) {
      sbq += (base_lp_[i] - mb) * (cand_lp_[i] - mq);
      sbb += (base_lp_[i] - mb) * (base_lp_[i] - mb);
      sqq += (cand_lp_[i] - mq) * (cand_lp_[i] - mq);
    }
    s.logprob_correlation = sbb > 0 && sqq > 0 ? sbq / std::sqrt(sbb * sqq) : 1.0;
  }
  s.kl_mean = Mean(kl_);
  s.kl_err = StdErr(kl_);
  s.kl_max = *std::max_element(kl_.begin(), kl_.end());
  s.kl_p999 = Quantile(kl_, 0.999);
  s.kl_p99 = Quantile(kl_, 0.99);
  s.kl_p95 = Quantile(kl_, 0.95);
  s.kl_p90 = Quantile(kl_, 0.90);
  s.kl_median = Quantile(kl_, 0.5);
  s.dp_mean = Mean(dp_);
  s.dp_err = StdErr(dp_);
  double sq = 0;
  for (double d : dp_) sq += d * d;
  s.dp_rms = std::sqrt(sq / static_cast<double>(n));
  s.dp_max = *std::max_element(dp_.begin(), dp_.end());
  s.dp_min = *std::min_element(dp_.begin(), dp_.end());
  s.dp_p99 = Quantile(dp_, 0.99);
  s.dp_p95 = Quantile(dp_, 0.95);
  s.dp_p90 = Quantile(dp_, 0.90);
  s.dp_median = Quantile(dp_, 0.5);
  s.dp_p10 = Quantile(dp_, 0.10);
  s.dp_p5 = Quantile(dp_, 0.05);
  s.dp_p1 = Quantile(dp_, 0.01);
  s.same_top1 = static_cast<double>(same_top1_) / static_cast<double>(n);
  s.same_top1_err = std::sqrt(s.same_top1 * (1 - s.same_top1) / static_cast<double>(n));
  s.kl_per_token.assign(kl_.begin(), kl_.end());
  return s;
}

}  // namespace quantserve::server
