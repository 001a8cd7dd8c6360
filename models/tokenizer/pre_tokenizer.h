#pragma once
// Pre-tokenizers: split normalized text into the pieces the model tokenizes one at a time
// (tokenizer.json "pre_tokenizer"). Supported "type"s: ByteLevel, Split, Sequence,
// BertPreTokenizer, WhitespaceSplit, Punctuation. Others are rejected at load with
// INVALID_ARGUMENT naming the type.
//
// ByteLevel also maps each piece's bytes to GPT-2's byte characters (byte_level.h), so the
// model sees byte-level strings. Implementations are immutable and thread-safe.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "models/tokenizer/json_util.h"

namespace quantserve::models::internal {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces every piece by its sub-pieces, in order; empty pieces are dropped.
  virtual void PreTokenize(std::vector<std::string>* pieces) const = 0;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> CreatePreTokenizer(const Json& config,
                                                                 absl::string_view path);

}  // namespace quantserve::models::internal
