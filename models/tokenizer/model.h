#pragma once
// Tokenization models: turn one pre-tokenized piece into ids (tokenizer.json "model").
// Supported "type"s: BPE (bpe_model.h) and WordPiece (word_piece_model.h).
//
// A Model is immutable after creation and safe to call from many threads; a model may keep an
// internal, synchronized cache.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "models/tokenizer/json_util.h"

namespace quantserve::models::internal {

class Model {
 public:
  virtual ~Model() = default;

  // Appends the ids of `piece` (non-empty, valid UTF-8) to `ids`.
  virtual void Tokenize(absl::string_view piece, std::vector<int32_t>* ids) const = 0;

  virtual std::optional<int32_t> TokenToId(absl::string_view token) const = 0;
  // Null if the model has no token with this id.
  virtual const std::string* IdToToken(int32_t id) const = 0;
  // Number of entries in the model's vocabulary (without added tokens).
  virtual int32_t vocab_size() const = 0;
  // The id unknown pieces map to, if the model has one.
  virtual std::optional<int32_t> unk_id() const = 0;
};

absl::StatusOr<std::unique_ptr<Model>> CreateModel(const Json& config, absl::string_view path);

}  // namespace quantserve::models::internal
