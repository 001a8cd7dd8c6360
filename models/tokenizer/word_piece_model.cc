#include "models/tokenizer/word_piece_model.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "models/tokenizer/unicode.h"

namespace quantserve::models::internal {

absl::StatusOr<std::unique_ptr<WordPieceModel>> WordPieceModel::Create(const Json& config,
                                                                       absl::string_view path) {
  QS_ASSIGN_OR_RETURN(const Json* vocab_json, GetObject(config, "vocab", path));
  QS_ASSIGN_OR_RETURN(Vocab vocab, ParseVocab(*vocab_json, FieldPath(path, "vocab")));
  auto model = std::unique_ptr<WordPieceModel>(new WordPieceModel(std::move(vocab)));
  QS_ASSIGN_OR_RETURN(const std::string unk, GetString(config, "unk_token", "[UNK]", path));
  QS_ASSIGN_OR_RETURN(model->continuing_subword_prefix_,
                      GetString(config, "continuing_subword_prefix", "##", path));
  QS_ASSIGN_OR_RETURN(model->max_input_chars_per_word_,
                      GetInt(config, "max_input_chars_per_word", 100, path));
  // HF fails at encode time when the unk token is missing; we refuse the file up front so that
  // encoding cannot fail.
  std::optional<int32_t> unk_id = model->vocab_.Find(unk);
  if (!unk_id.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", FieldPath(path, "unk_token"),
                                                   " '", unk, "' is not in the vocabulary"));
  }
  model->unk_id_ = *unk_id;
  return model;
}

void WordPieceModel::Tokenize(absl::string_view piece, std::vector<int32_t>* ids) const {
  int64_t chars = 0;
  for (unsigned char c : piece) {
    chars += (c & 0xC0) != 0x80;
  }
  if (chars > max_input_chars_per_word_) {
    ids->push_back(unk_id_);
    return;
  }
  const size_t first = ids->size();
  std::string candidate;
  size_t start = 0;
  while (start < piece.size()) {
    // No vocabulary entry is longer than max_token_bytes, so longer candidates cannot match.
    const size_t prefix_len = start > 0 ? continuing_subword_prefix_.size() : 0;
    size_t end = piece.size();
    if (vocab_.max_token_bytes() >= prefix_len &&
        end - start > vocab_.max_token_bytes() - prefix_len) {
      end = start + (vocab_.max_token_bytes() - prefix_len);
      while (end > start && (static_cast<unsigned char>(piece[end]) & 0xC0) == 0x80) {
        --end;  // back to a character boundary
      }
    }
    std::optional<int32_t> found;
    while (end > start) {
      candidate.clear();
      if (start > 0) {
        candidate += continuing_subword_prefix_;
      }
      absl::StrAppend(&candidate, piece.substr(start, end - start));
      found = vocab_.Find(candidate);
      if (found.has_value()) {
        break;
      }
      do {
        --end;
      } while (end > start && (static_cast<unsigned char>(piece[end]) & 0xC0) == 0x80);
    }
    if (!found.has_value()) {
      ids->resize(first);
      ids->push_back(unk_id_);
      return;
    }
    ids->push_back(*found);
    start = end;
  }
}

}  // namespace quantserve::models::internal
