#pragma once
// The quality figures of a Compare: a candidate's next-token distributions against the
// baseline's on exactly the same tokens, as llama.cpp's `llama-perplexity --kl-divergence`
// reports them. Plain C++ over log-probability rows; no model or torch here.
//
// Per scored position i (predicting token t = tokens[i+1]) with baseline log-probs b[.] and
// candidate log-probs q[.]:
//   KL(base||Q) = sum_v exp(b[v]) (b[v] - q[v]),  ln PPL(Q)/PPL(base) term = b[t] - q[t],
//   delta-p = exp(q[t]) - exp(b[t]),  same top-1 = argmax b == argmax q.
// Uncertainties are standard errors of the mean (stddev / sqrt(n)), as llama.cpp prints.

#include <cstdint>
#include <vector>

namespace quantserve::server {

struct QualityStats {
  int64_t tokens = 0;               // positions scored
  double perplexity = 0;            // the candidate's, exp(-mean q[t])
  double base_perplexity = 0;       // the baseline's
  double mean_ln_ratio = 0;         // ln PPL(Q)/PPL(base): the mean of b[t] - q[t]
  double mean_ln_ratio_err = 0;
  double ppl_ratio = 0;             // exp(mean_ln_ratio)
  double ppl_ratio_err = 0;         // ppl_ratio * mean_ln_ratio_err
  double logprob_correlation = 0;   // Pearson correlation of b[t] and q[t] over positions
  double kl_mean = 0, kl_err = 0, kl_max = 0;
  double kl_p999 = 0, kl_p99 = 0, kl_p95 = 0, kl_p90 = 0, kl_median = 0;
  double dp_mean = 0, dp_err = 0, dp_rms = 0;  // delta-p of the actual next token
  double dp_p99 = 0, dp_p95 = 0, dp_p90 = 0, dp_median = 0, dp_p10 = 0, dp_p5 = 0, dp_p1 = 0;
  double dp_max = 0, dp_min = 0;
  double same_top1 = 0;             // fraction of positions, 0..1
  double same_top1_err = 0;
  std::vector<float> kl_per_token;  // for plots; in position order
};

class QualityAccumulator {
 public:
  // One position: the two log-softmax rows (vocab entries each) and the actual next token.
  void Add(const float* base_row, const float* candidate_row, int64_t vocab, int32_t target);
  QualityStats Finish() const;

 private:
  std::vector<double> kl_, dp_, base_lp_, cand_lp_;
  int64_t same_top1_ = 0;
};

// The q-th quantile (0..1) of `values` by linear interpolation (copies and sorts).
double Quantile(std::vector<double> values, double q);

}  // namespace quantserve::server
