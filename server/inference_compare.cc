// InferenceService::Compare (see inference_service.h and compare_runner.h).
#include <atomic>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "server/compare_runner.h"
#include "server/inference_service.h"
#include "server/load_request.h"
#include "server/server_stream.h"

namespace quantserve::server {
namespace {

constexpr char kCompare[] = "Compare";
constexpr size_t kMaxCompareTexts = 256;
constexpr size_t kMaxCompareBytes = 4 << 20;

absl::Status FieldError(absl::string_view field, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
}

// Fills the defaults and checks the ranges, naming the field.
absl::StatusOr<CompareSettings> Settings(const v1::CompareRequest& r) {
  if (absl::Status s = ValidateModelName(r.baseline(), "baseline"); !s.ok()) return s;
  if (r.candidates().empty()) return FieldError("candidates", "at least one is required");
  std::set<std::string> seen = {r.baseline()};
  for (int i = 0; i < r.candidates_size(); ++i) {
    const std::string field = absl::StrCat("candidates[", i, "]");
    if (absl::Status s = ValidateModelName(r.candidates(i), field); !s.ok()) return s;
    if (!seen.insert(r.candidates(i)).second) {
      return FieldError(field, absl::StrCat("'", r.candidates(i), "' is listed twice or is the baseline"));
    }
  }
  if (static_cast<size_t>(r.texts_size()) > kMaxCompareTexts) {
    return FieldError("texts", absl::StrCat("at most ", kMaxCompareTexts, " texts"));
  }
  size_t bytes = 0;
  for (const std::string& t : r.texts()) bytes += t.size();
  if (bytes > kMaxCompareBytes) {
    return FieldError("texts", absl::StrCat("at most ", kMaxCompareBytes, " bytes in all"));
  }
  CompareSettings s;
  s.texts.assign(r.texts().begin(), r.texts().end());
  const auto range = [](const char* field, int32_t v, int32_t fallback, int32_t lo,
                        int32_t hi) -> absl::StatusOr<int32_t> {
    if (v == 0) return fallback;
    if (v < lo || v > hi) {
      return FieldError(field, absl::StrCat("must be in [", lo, ", ", hi, "] (or 0), got ", v));
    }
    return v;
  };
  absl::StatusOr<int32_t> v = range("max_tokens", r.max_tokens(), 512, 2, 4096);
  if (!v.ok()) return v.status();
  s.max_tokens = *v;
  v = range("continuation_tokens", r.continuation_tokens(), 32, 1, 1024);
  if (!v.ok()) return v.status();
  s.continuation_tokens = *v;
  v = range("speed_prompt_tokens", r.speed_prompt_tokens(), 128, 1, 4096);
  if (!v.ok()) return v.status();
  s.speed_prompt_tokens = *v;
  v = range("speed_new_tokens", r.speed_new_tokens(), 32, 1, 4096);
  if (!v.ok()) return v.status();
  s.speed_new_tokens = *v;
  return s;
}

// The baseline directory's heldout.txt, one text per blank-line-separated block.
absl::StatusOr<std::vector<std::string>> HeldOutTexts(const ModelRegistry& registry,
                                                      const std::string& model) {
  absl::StatusOr<ModelSnapshot> snapshot = registry.Get(model);
  if (!snapshot.ok()) return snapshot.status();
  absl::StatusOr<std::string> dir = ResolveModelPath(
      registry.options().model_root, snapshot->path, registry.options().allow_symlinks_outside_root);
  if (!dir.ok()) return dir.status();
  std::ifstream in(*dir + "/heldout.txt");
  if (!in) {
    return FieldError("texts", absl::StrCat("empty, and model '", model,
                                            "' ships no heldout.txt to compare on"));
  }
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::string> texts = SplitParagraphs(text.str());
  if (texts.empty()) return FieldError("texts", absl::StrCat("'", model, "' heldout.txt is empty"));
  return texts;
}

}  // namespace

grpc::ServerWriteReactor<v1::CompareProgress>* InferenceService::Compare(
    grpc::CallbackServerContext* context, const v1::CompareRequest* request) {
  const absl::Time start = absl::Now();
  ServerMetrics* metrics = options_.metrics;
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  const ModelLabels labels{.model = request->baseline(), .quant_method = ""};
  auto stream = ServerStream<v1::CompareProgress>::Create(
      context, {.on_cancel = [cancelled] { cancelled->store(true); },
                .on_finish =
                    [metrics, labels, start](const absl::Status& status) {
                      metrics->RecordRequest(kCompare, labels, status.code(),
                                             absl::ToDoubleSeconds(absl::Now() - start));
                    }});
  if (absl::Status s = Authorize(options_.auth, context, kCompare); !s.ok()) {
    stream->Finish(std::move(s));
    return stream->reactor();
  }
  absl::StatusOr<CompareSettings> settings = Settings(*request);
  if (!settings.ok()) {
    stream->Finish(settings.status());
    return stream->reactor();
  }
  // Pins every variant for the whole comparison (an unload waits for it, or cancels it).
  auto pins = std::make_shared<std::vector<ModelHandle>>();
  std::vector<std::string> names = {request->baseline()};
  names.insert(names.end(), request->candidates().begin(), request->candidates().end());
  for (const std::string& name : names) {
    absl::StatusOr<ModelHandle> handle = options_.registry->Acquire(name);
    if (!handle.ok()) {
      stream->Finish(handle.status());
      return stream->reactor();
    }
    handle->SetCanceller([cancelled] { cancelled->store(true); });
    pins->push_back(*std::move(handle));
  }
  if (settings->texts.empty()) {
    absl::StatusOr<std::vector<std::string>> texts = HeldOutTexts(*options_.registry, names[0]);
    if (!texts.ok()) {
      stream->Finish(texts.status());
      return stream->reactor();
    }
    settings->texts = *std::move(texts);
  }
  const bool queued = request_pool_->TrySchedule([stream, pins, cancelled, metrics,
                                                  settings = *std::move(settings)] {
    std::vector<const ModelHandle*> models;
    for (const ModelHandle& h : *pins) models.push_back(&h);
    absl::StatusOr<v1::CompareReport> report = RunCompare(
        models, settings,
        [stream](const std::string& variant, const std::string& phase, int64_t done,
                 int64_t total) {
          v1::CompareProgress p;
          p.set_variant(variant);
          p.set_phase(phase);
          p.set_done(done);
          p.set_total(total);
          stream->WriteLatest(std::move(p));
        },
        [cancelled] { return cancelled->load(); });
    pins->clear();  // release the models before answering
    if (!report.ok()) {
      stream->Finish(report.status());
      return;
    }
    for (const v1::CompareVariant& v : report->variants()) {
      metrics->SetCompareResult(report->baseline(), v.model(), v.kl_mean(), v.same_top1(),
                                v.ppl_ratio());
    }
    QS_LOG(INFO) << "compare done" << common::Kv("baseline", report->baseline())
                 << common::Kv("variants", report->variants_size())
                 << common::Kv("tokens", report->tokens());
    v1::CompareProgress last;
    last.set_phase("done");
    *last.mutable_report() = *std::move(report);
    stream->Write(std::move(last));
    stream->Finish(absl::OkStatus());
  });
  if (!queued) {
    pins->clear();
    stream->Finish(absl::ResourceExhaustedError("request queue full; retry later"));
  }
  return stream->reactor();
}

}  // namespace quantserve::server
