#pragma once
// A model vocabulary: token string <-> id, as read from tokenizer.json's "model.vocab".
// Immutable after ParseVocab(); thread-safe.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "models/tokenizer/json_util.h"

namespace quantserve::models::internal {

class Vocab {
 public:
  std::optional<int32_t> Find(absl::string_view token) const {
    auto it = ids_.find(token);
    return it == ids_.end() ? std::nullopt : std::optional<int32_t>(it->second);
  }
  const std::string* Token(int32_t id) const {
    auto it = tokens_.find(id);
    return it == tokens_.end() ? nullptr : &it->second;
  }
  int32_t size() const { return static_cast<int32_t>(ids_.size()); }
  // Length in bytes of the longest token.
  size_t max_token_bytes() const { return max_token_bytes_; }

 private:
  friend absl::StatusOr<Vocab> ParseVocab(const Json& object, absl::string_view path);

  absl::flat_hash_map<std::string, int32_t> ids_;
  absl::flat_hash_map<int32_t, std::string> tokens_;
  size_t max_token_bytes_ = 0;
};

// Reads {"token": id, ...}; ids must be integers in [0, 2^31).
absl::StatusOr<Vocab> ParseVocab(const Json& object, absl::string_view path);

}  // namespace quantserve::models::internal
