#pragma once
// WordPiece (tokenizer.json model.type "WordPiece"), as in BERT and all-MiniLM-L6-v2: greedy
// longest-match-first over the vocabulary, continuation pieces carrying a prefix ("##"); a word
// with an unmatchable remainder, or longer than max_input_chars_per_word characters, becomes
// the single unk token. Stateless, immutable, thread-safe.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "models/tokenizer/model.h"
#include "models/tokenizer/vocab.h"

namespace quantserve::models::internal {

class WordPieceModel final : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<WordPieceModel>> Create(const Json& config,
                                                                absl::string_view path);

  void Tokenize(absl::string_view piece, std::vector<int32_t>* ids) const override;
  std::optional<int32_t> TokenToId(absl::string_view token) const override {
    return vocab_.Find(token);
  }
  const std::string* IdToToken(int32_t id) const override { return vocab_.Token(id); }
  int32_t vocab_size() const override { return vocab_.size(); }
  std::optional<int32_t> unk_id() const override { return unk_id_; }

 private:
  explicit WordPieceModel(Vocab vocab) : vocab_(std::move(vocab)) {}

  const Vocab vocab_;
  int32_t unk_id_ = 0;
  std::string continuing_subword_prefix_;
  int64_t max_input_chars_per_word_ = 100;
};

}  // namespace quantserve::models::internal
