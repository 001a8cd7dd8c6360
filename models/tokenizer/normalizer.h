#pragma once
// Normalizers: the first stage of encoding, rewriting text before it is split (tokenizer.json
// "normalizer"). Supported "type"s: BertNormalizer, NFC, NFD, Lowercase, StripAccents, Strip,
// Replace, Prepend, ByteLevel, Sequence. Anything else (NFKC, Precompiled, ...) is rejected at
// load with INVALID_ARGUMENT naming the type.
//
// Implementations are immutable and thread-safe. Input and output are valid UTF-8.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "models/tokenizer/json_util.h"

namespace quantserve::models::internal {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string Normalize(absl::string_view text) const = 0;
};

// Builds the normalizer described by `config` (an object with a "type"); `path` names it in
// errors.
absl::StatusOr<std::unique_ptr<Normalizer>> CreateNormalizer(const Json& config,
                                                             absl::string_view path);

}  // namespace quantserve::models::internal
