#include "server/request_validation.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace quantserve::server {
namespace {

absl::Status FieldError(absl::string_view field, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
}

absl::Status CheckModel(const std::string& model) {
  if (model.empty()) {
    return FieldError("model", "required (the name of a loaded model)");
  }
  return absl::OkStatus();
}

template <typename Ids>
absl::Status CheckInputIds(const Ids& ids) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) {
      return FieldError(absl::StrCat("input_ids[", i, "]"),
                        absl::StrCat("must be >= 0, got ", ids[i]));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateGenerateRequest(const v1::GenerateRequest& request,
                                     const RequestLimits& limits) {
  if (absl::Status s = CheckModel(request.model()); !s.ok()) {
    return s;
  }
  if (request.prompt().empty() && request.input_ids().empty()) {
    return FieldError("prompt", "required (or input_ids)");
  }
  if (absl::Status s = CheckInputIds(request.input_ids()); !s.ok()) {
    return s;
  }
  if (request.has_max_new_tokens() &&
      (request.max_new_tokens() < 1 || request.max_new_tokens() > limits.max_new_tokens)) {
    return FieldError("max_new_tokens", absl::StrCat("must be in [1, ", limits.max_new_tokens,
                                                     "], got ", request.max_new_tokens()));
  }
  const v1::SamplingParams& sampling = request.sampling();
  if (!(sampling.temperature() >= 0) || std::isinf(sampling.temperature())) {
    return FieldError(
        "sampling.temperature",
        absl::StrCat("must be a finite number >= 0 (0 = greedy), got ", sampling.temperature()));
  }
  if (sampling.top_k() < 0) {
    return FieldError("sampling.top_k",
                      absl::StrCat("must be >= 0 (0 = off), got ", sampling.top_k()));
  }
  if (sampling.has_top_p() && !(sampling.top_p() > 0 && sampling.top_p() <= 1)) {
    return FieldError("sampling.top_p", absl::StrCat("must be in (0, 1], got ", sampling.top_p()));
  }
  if (sampling.has_repetition_penalty() &&
      (!(sampling.repetition_penalty() > 0) || std::isinf(sampling.repetition_penalty()))) {
    return FieldError(
        "sampling.repetition_penalty",
        absl::StrCat("must be a finite number > 0 (1 = off), got ", sampling.repetition_penalty()));
  }
  if (static_cast<size_t>(request.stop_size()) > limits.max_stop_strings) {
    return FieldError("stop", absl::StrCat("at most ", limits.max_stop_strings,
                                           " stop strings, got ", request.stop_size()));
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    if (request.stop(i).empty()) {
      return FieldError(absl::StrCat("stop[", i, "]"), "must not be empty");
    }
    if (request.stop(i).size() > limits.max_stop_bytes) {
      return FieldError(absl::StrCat("stop[", i, "]"),
                        absl::StrCat("at most ", limits.max_stop_bytes, " bytes, got ",
                                     request.stop(i).size()));
    }
  }
  if (request.logprobs() < 0 || request.logprobs() > limits.max_logprobs) {
    return FieldError("logprobs", absl::StrCat("must be in [0, ", limits.max_logprobs, "], got ",
                                               request.logprobs()));
  }
  return absl::OkStatus();
}

absl::Status ValidateEmbedRequest(const v1::EmbedRequest& request, const RequestLimits& limits) {
  if (absl::Status s = CheckModel(request.model()); !s.ok()) {
    return s;
  }
  if (request.texts().empty()) {
    return FieldError("texts", "required (at least one text)");
  }
  if (static_cast<size_t>(request.texts_size()) > limits.max_embed_texts) {
    return FieldError("texts", absl::StrCat("at most ", limits.max_embed_texts,
                                            " texts per request, got ", request.texts_size()));
  }
  size_t bytes = 0;
  for (const std::string& text : request.texts()) {
    bytes += text.size();
  }
  if (bytes > limits.max_embed_bytes) {
    return FieldError("texts", absl::StrCat("at most ", limits.max_embed_bytes,
                                            " bytes of text per request, got ", bytes));
  }
  const std::string& pooling = request.pooling();
  if (!pooling.empty() && pooling != "mean" && pooling != "cls" && pooling != "last") {
    return FieldError("pooling", absl::StrCat("'", pooling, "' is not mean|cls|last (or empty)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateScoreRequest(const v1::ScoreRequest& request) {
  if (absl::Status s = CheckModel(request.model()); !s.ok()) {
    return s;
  }
  if (request.text().empty() && request.input_ids().empty()) {
    return FieldError("text", "required (or input_ids)");
  }
  return CheckInputIds(request.input_ids());
}

absl::Status ValidateTokenizeRequest(const v1::TokenizeRequest& request) {
  return CheckModel(request.model());
}

}  // namespace quantserve::server
