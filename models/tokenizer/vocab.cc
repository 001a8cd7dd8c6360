#include "models/tokenizer/vocab.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace quantserve::models::internal {

absl::StatusOr<Vocab> ParseVocab(const Json& object, absl::string_view path) {
  if (!object.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: ", path, " must be an object of token -> id"));
  }
  Vocab vocab;
  vocab.ids_.reserve(object.size());
  vocab.tokens_.reserve(object.size());
  for (auto it = object.begin(); it != object.end(); ++it) {
    const Json& id = it.value();
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", path, "[\"", it.key(),
                                                     "\"] must be a non-negative 32-bit id"));
    }
    const auto id32 = static_cast<int32_t>(id.get<int64_t>());
    vocab.ids_.emplace(it.key(), id32);
    vocab.tokens_.emplace(id32, it.key());
    vocab.max_token_bytes_ = std::max(vocab.max_token_bytes_, it.key().size());
  }
  return vocab;
}

}  // namespace quantserve::models::internal
