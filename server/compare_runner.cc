#include "server/compare_runner.h"

#include <cstdlib>
#include <future>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "server/compare_stats.h"

namespace quantserve::server {
namespace {

// Runs one generation to its end on the calling thread.
class BlockingObserver final : public engine::GenerateObserver {
 public:
  void OnChunk(engine::GenerateChunk chunk) override {
    tokens_.insert(tokens_.end(), chunk.token_ids.begin(), chunk.token_ids.end());
  }
  void OnFinish(absl::StatusOr<engine::GenerateFinish> finish) override {
    done_.set_value(std::move(finish));
  }
  // Valid once the finish arrived (the promise orders the writes before it).
  const std::vector<int32_t>& tokens() const { return tokens_; }
  std::future<absl::StatusOr<engine::GenerateFinish>> future() { return done_.get_future(); }

 private:
  std::vector<int32_t> tokens_;
  std::promise<absl::StatusOr<engine::GenerateFinish>> done_;
};

struct Generated {
  std::vector<int32_t> tokens;
  engine::GenerateFinish finish;
};

absl::StatusOr<Generated> GenerateGreedy(const ModelHandle& model, std::vector<int32_t> prompt,
                                         int32_t new_tokens) {
  engine::GenerateParams params;
  params.input_ids = std::move(prompt);
  params.max_new_tokens = new_tokens;
  params.ignore_eos = true;  // equal lengths for every variant
  auto observer = std::make_shared<BlockingObserver>();
  auto result = observer->future();
  std::unique_ptr<engine::GenerationHandle> handle = model.model().Generate(params, observer);
  absl::StatusOr<engine::GenerateFinish> finish = result.get();
  if (!finish.ok()) return finish.status();
  return Generated{observer->tokens(), *std::move(finish)};
}

absl::StatusOr<engine::ScoreResult> ScoreFull(const ModelHandle& model,
                                              const std::vector<int32_t>& ids) {
  engine::ScoreParams params;
  params.input_ids = ids;
  params.full_distributions = true;
  absl::StatusOr<engine::ScoreResult> r = model.model().Score(params);
  if (!r.ok()) return r;
  if (r->vocab <= 0 || r->distributions.size() != (ids.size() - 1) * static_cast<size_t>(r->vocab)) {
    return absl::InternalError(absl::StrCat("model '", model.name(),
                                            "' returned no full distributions to compare"));
  }
  return r;
}

void FillQuality(const QualityStats& q, v1::CompareVariant* out) {
  out->set_perplexity(q.perplexity);
  out->set_ppl_ratio(q.ppl_ratio);
  out->set_ppl_ratio_err(q.ppl_ratio_err);
  out->set_mean_ln_ratio(q.mean_ln_ratio);
  out->set_mean_ln_ratio_err(q.mean_ln_ratio_err);
  out->set_logprob_correlation(q.logprob_correlation);
  out->set_kl_mean(q.kl_mean);
  out->set_kl_err(q.kl_err);
  out->set_kl_max(q.kl_max);
  out->set_kl_p999(q.kl_p999);
  out->set_kl_p99(q.kl_p99);
  out->set_kl_p95(q.kl_p95);
  out->set_kl_p90(q.kl_p90);
  out->set_kl_median(q.kl_median);
  out->set_dp_mean(q.dp_mean);
  out->set_dp_err(q.dp_err);
  out->set_dp_rms(q.dp_rms);
  out->set_dp_max(q.dp_max);
  out->set_dp_p99(q.dp_p99);
  out->set_dp_p95(q.dp_p95);
  out->set_dp_p90(q.dp_p90);
  out->set_dp_median(q.dp_median);
  out->set_dp_p10(q.dp_p10);
  out->set_dp_p5(q.dp_p5);
  out->set_dp_p1(q.dp_p1);
  out->set_dp_min(q.dp_min);
  out->set_same_top1(q.same_top1);
  out->set_same_top1_err(q.same_top1_err);
  out->mutable_kl_per_token()->Add(q.kl_per_token.begin(), q.kl_per_token.end());
}

}  // namespace

std::vector<std::string> SplitParagraphs(const std::string& text) {
  std::vector<std::string> out;
  std::string current;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StripAsciiWhitespace(line).empty()) {
      if (!current.empty()) out.push_back(std::move(current));
      current.clear();
      continue;
    }
    if (!current.empty()) current += "\n";
    current += std::string(absl::StripTrailingAsciiWhitespace(line));
  }
  if (!current.empty()) out.push_back(std::move(current));
  return out;
}

absl::StatusOr<v1::CompareReport> RunCompare(const std::vector<const ModelHandle*>& models,
                                             const CompareSettings& settings,
                                             const CompareProgressFn& progress,
                                             const std::function<bool()>& cancelled) {
  const ModelHandle& base = *models[0];
  for (const ModelHandle* m : models) {
    if (m->description().task != engine::Task::kGenerate) {
      return absl::FailedPreconditionError(
          absl::StrCat("model '", m->name(), "' is an embedding model: nothing to compare"));
    }
    if (m->description().tokenizer_fingerprint != base.description().tokenizer_fingerprint) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model '", m->name(), "' has a different tokenizer from the baseline '", base.name(),
          "': the variants must score the same tokens"));
    }
  }
  const auto check_cancel = [&]() -> absl::Status {
    return cancelled() ? absl::CancelledError("comparison cancelled") : absl::OkStatus();
  };

  // The same token ids for everyone: the baseline's tokenization, truncated to max_tokens and
  // to what keeps one text's distributions (rows x vocab floats, two variants at a time) under
  // kMaxDistributionBytes: 512 rows at a 128k vocabulary.
  constexpr int64_t kMaxDistributionBytes = int64_t{256} << 20;
  const int64_t vocab = std::max<int64_t>(1, base.description().vocab_size);
  const int64_t max_tokens = std::max<int64_t>(
      2, std::min<int64_t>(settings.max_tokens, kMaxDistributionBytes / (vocab * 4) + 1));
  std::vector<std::vector<int32_t>> texts;
  for (const std::string& text : settings.texts) {
    absl::StatusOr<engine::TokenizeResult> t = base.model().Tokenize(text, true);
    if (!t.ok()) return t.status();
    if (static_cast<int64_t>(t->token_ids.size()) > max_tokens) t->token_ids.resize(max_tokens);
    if (t->token_ids.size() >= 2) texts.push_back(std::move(t->token_ids));
  }
  if (texts.empty()) {
    return absl::InvalidArgumentError("texts: none has the two tokens needed to score");
  }

  // 1. Quality.
  std::vector<QualityAccumulator> quality(models.size());
  int64_t positions = 0;
  for (size_t t = 0; t < texts.size(); ++t) {
    QS_RETURN_IF_ERROR(check_cancel());
    progress(base.name(), "score", static_cast<int64_t>(t), static_cast<int64_t>(texts.size()));
    absl::StatusOr<engine::ScoreResult> b = ScoreFull(base, texts[t]);
    if (!b.ok()) return b.status();
    const int64_t rows = static_cast<int64_t>(texts[t].size()) - 1;
    positions += rows;
    for (size_t m = 0; m < models.size(); ++m) {
      absl::StatusOr<engine::ScoreResult> q;
      const engine::ScoreResult* cand = &*b;
      if (m > 0) {
        QS_RETURN_IF_ERROR(check_cancel());
        progress(models[m]->name(), "score", static_cast<int64_t>(t),
                 static_cast<int64_t>(texts.size()));
        q = ScoreFull(*models[m], texts[t]);
        if (!q.ok()) return q.status();
        if (q->vocab != b->vocab) {
          return absl::FailedPreconditionError(absl::StrCat(
              "model '", models[m]->name(), "' has ", q->vocab, " vocabulary entries, the baseline ",
              b->vocab));
        }
        cand = &*q;
      }
      for (int64_t i = 0; i < rows; ++i) {
        const int32_t target = texts[t][i + 1];
        if (target < 0 || target >= b->vocab) {
          return absl::InternalError(absl::StrCat("token ", target, " is outside the vocabulary"));
        }
        quality[m].Add(b->distributions.data() + i * b->vocab,
                       cand->distributions.data() + i * b->vocab, b->vocab, target);
      }
    }
  }

  // 2. Greedy agreement from the first text's opening.
  std::vector<int32_t> opening(texts[0].begin(),
                               texts[0].begin() + std::max<size_t>(1, texts[0].size() / 2));
  std::vector<std::vector<int32_t>> greedy(models.size());
  for (size_t m = 0; m < models.size(); ++m) {
    QS_RETURN_IF_ERROR(check_cancel());
    progress(models[m]->name(), "greedy", static_cast<int64_t>(m), static_cast<int64_t>(models.size()));
    absl::StatusOr<Generated> g = GenerateGreedy(*models[m], opening, settings.continuation_tokens);
    if (!g.ok()) return g.status();
    greedy[m] = std::move(g->tokens);
  }

  // 3. Speed, one variant at a time: a prompt of speed_prompt_tokens from the texts' ids.
  std::vector<int32_t> prompt;
  for (size_t i = 0; static_cast<int32_t>(prompt.size()) < settings.speed_prompt_tokens; ++i) {
    const std::vector<int32_t>& ids = texts[i % texts.size()];
    for (size_t j = 0; j < ids.size() && static_cast<int32_t>(prompt.size()) < settings.speed_prompt_tokens; ++j) {
      prompt.push_back(ids[j]);
    }
  }
  v1::CompareReport report;
  report.set_baseline(base.name());
  report.set_tokens(positions);
  report.set_texts(static_cast<int32_t>(texts.size()));
  double load[1] = {0};
  if (getloadavg(load, 1) == 1) report.set_load_average(load[0]);
  for (size_t m = 0; m < models.size(); ++m) {
    QS_RETURN_IF_ERROR(check_cancel());
    progress(models[m]->name(), "speed", static_cast<int64_t>(m), static_cast<int64_t>(models.size()));
    absl::StatusOr<Generated> g = GenerateGreedy(*models[m], prompt, settings.speed_new_tokens);
    if (!g.ok()) return g.status();
    const engine::ModelDescription& d = models[m]->description();
    v1::CompareVariant* v = report.add_variants();
    v->set_model(models[m]->name());
    v->set_quant_method(d.quant_method);
    v->set_memory_footprint_bytes(d.memory_footprint_bytes);
    v->set_load_seconds(d.load_seconds);
    for (const auto& [kernel, layers] : d.kernels) (*v->mutable_kernels())[kernel] = layers;
    FillQuality(quality[m].Finish(), v);
    int32_t agree = 0;
    while (agree < static_cast<int32_t>(std::min(greedy[0].size(), greedy[m].size())) &&
           greedy[0][agree] == greedy[m][agree]) {
      ++agree;
    }
    v->set_greedy_agreement_tokens(agree);
    v->set_continuation_tokens(static_cast<int32_t>(greedy[0].size()));
    const engine::GenerateFinish& f = g->finish;
    const double ttft = f.time_to_first_token_seconds;
    if (ttft > 0) v->set_prefill_tokens_per_second(f.prompt_tokens / ttft);
    if (f.completion_tokens > 1 && f.seconds > ttft) {
      v->set_decode_tokens_per_second((f.completion_tokens - 1) / (f.seconds - ttft));
    }
    const v1::CompareVariant& b = report.variants(0);
    if (b.prefill_tokens_per_second() > 0) {
      v->set_prefill_ratio(v->prefill_tokens_per_second() / b.prefill_tokens_per_second());
    }
    if (b.decode_tokens_per_second() > 0) {
      v->set_decode_ratio(v->decode_tokens_per_second() / b.decode_tokens_per_second());
    }
  }
  return report;
}

}  // namespace quantserve::server
