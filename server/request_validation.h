#pragma once
// Request checks for InferenceService, run before a request touches a model.
//
// Every error is INVALID_ARGUMENT and starts with the offending field's name
// ("sampling.top_p: must be in (0, 1], got 1.5"), so clients can point at it. The limits are
// configurable (RequestLimits, filled from the server's flags); the total request size is
// bounded separately by gRPC's max receive message size.

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "quantserve/v1/inference_service.pb.h"

namespace quantserve::server {

struct RequestLimits {
  // Largest GenerateRequest.max_new_tokens accepted.
  int32_t max_new_tokens = 4096;
  // max_new_tokens used when a request leaves it unset.
  int32_t default_max_new_tokens = 64;
  // Largest GenerateRequest.logprobs (top-k alternatives) accepted.
  int32_t max_logprobs = 20;
  // Most stop strings per request.
  size_t max_stop_strings = 16;
  // Longest stop string, in bytes (each is matched against the decoded tail every token).
  size_t max_stop_bytes = 1024;
  // Most texts per EmbedRequest.
  size_t max_embed_texts = 256;
  // Most bytes of all texts of one EmbedRequest together.
  size_t max_embed_bytes = 1 << 20;
};

absl::Status ValidateGenerateRequest(const v1::GenerateRequest& request,
                                     const RequestLimits& limits);
absl::Status ValidateEmbedRequest(const v1::EmbedRequest& request, const RequestLimits& limits);
absl::Status ValidateScoreRequest(const v1::ScoreRequest& request);
absl::Status ValidateTokenizeRequest(const v1::TokenizeRequest& request);

}  // namespace quantserve::server
