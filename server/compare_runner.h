#pragma once
// RunCompare: the work behind InferenceService.Compare, on pinned models, blocking the calling
// (request pool) thread. Everything runs through each model's own engine calls (Score with
// full distributions, Generate), so a comparison shares the schedulers fairly with traffic.
//
//   1. score: every text, truncated to max_tokens (and to 256 MiB of distributions: 512 tokens
//      at a 128k vocabulary), on the baseline and then on each candidate; each candidate's rows
//      meet the baseline's in a QualityAccumulator and are dropped, so memory holds two texts'
//      distributions at a time;
//   2. greedy: a continuation of continuation_tokens from the first text's opening, greedy,
//      compared token by token with the baseline's;
//   3. speed: one generation per variant, one variant at a time, prefill and decode tok/s from
//      its own timings.

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "quantserve/v1/inference_service.pb.h"
#include "server/model_registry.h"

namespace quantserve::server {

struct CompareSettings {
  std::vector<std::string> texts;  // at least one
  int32_t max_tokens = 512;
  int32_t continuation_tokens = 32;
  int32_t speed_prompt_tokens = 128;
  int32_t speed_new_tokens = 32;
};

// Called with (variant, phase, done, total) as the work advances.
using CompareProgressFn =
    std::function<void(const std::string&, const std::string&, int64_t, int64_t)>;

// `models`: the baseline first, then the candidates, pinned. `cancelled` is polled between
// steps (CANCELLED when it says so). Errors: FAILED_PRECONDITION (an embedding model;
// tokenizers differ), INVALID_ARGUMENT (no text has two tokens), and the engine's.
absl::StatusOr<v1::CompareReport> RunCompare(const std::vector<const ModelHandle*>& models,
                                             const CompareSettings& settings,
                                             const CompareProgressFn& progress,
                                             const std::function<bool()>& cancelled);

// The blocks of `text` separated by blank lines, trimmed, empty ones dropped (heldout.txt).
std::vector<std::string> SplitParagraphs(const std::string& text);

}  // namespace quantserve::server
