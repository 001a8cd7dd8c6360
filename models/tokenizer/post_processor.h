#pragma once
// Post-processors add the special tokens around an encoded sequence (tokenizer.json
// "post_processor"). Supported "type"s: TemplateProcessing, BertProcessing, RobertaProcessing,
// ByteLevel (offsets only, so a no-op on ids), Sequence. Only single sequences are encoded; the
// pair templates are read but unused. Immutable and thread-safe.

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "models/tokenizer/json_util.h"

namespace quantserve::models::internal {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Rewrites the ids of one sequence; adds nothing unless `add_special_tokens`.
  virtual void Process(std::vector<int32_t>* ids, bool add_special_tokens) const = 0;
};

absl::StatusOr<std::unique_ptr<PostProcessor>> CreatePostProcessor(const Json& config,
                                                                   absl::string_view path);

}  // namespace quantserve::models::internal
