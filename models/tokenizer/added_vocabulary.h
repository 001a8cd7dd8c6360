#pragma once
// Added tokens (tokenizer.json "added_tokens"): strings such as <|eot_id|> or [CLS] that are
// cut out of the text before the normalizer and pre-tokenizer run and map straight to their
// ids, like HF's AddedVocabulary.
//
// Matching is leftmost-longest over all tokens. Tokens with normalized=false match the raw
// text; those with normalized=true match the normalized text by their normalized form. The
// single_word, lstrip and rstrip flags behave as in HF (word characters per regex \w,
// whitespace per Unicode White_Space). Immutable after Create(); thread-safe.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "models/tokenizer/model.h"
#include "models/tokenizer/normalizer.h"

namespace quantserve::models::internal {

struct AddedToken {
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

class AddedVocabulary {
 public:
  // Assigns ids as HF does when it loads tokenizer.json: a token whose content the model
  // already has takes the model's id; a new one takes the next id after the model's
  // vocabulary. `normalizer` (may be null) gives normalized tokens their matching form.
  static absl::StatusOr<std::unique_ptr<AddedVocabulary>> Create(
      const std::vector<AddedToken>& tokens, const Model& model, const Normalizer* normalizer);

  // A piece of the input: an added token's text with its id, or text still to tokenize.
  struct Split {
    std::string text;
    std::optional<int32_t> id;
  };
  // Splits out non-normalized tokens, normalizes what is left, then splits out normalized
  // tokens (HF's extract_and_normalize). Empty texts are not returned.
  std::vector<Split> ExtractAndNormalize(absl::string_view text,
                                         const Normalizer* normalizer) const;

  std::optional<int32_t> TokenToId(absl::string_view content) const;
  // The string decoding uses for `id` (its normalized form for normalized tokens); null if
  // `id` is not an added token.
  const std::string* IdToToken(int32_t id) const;
  const AddedToken* Find(int32_t id) const;
  // True if `token` is the content of a special added token (HF tests content, not ids).
  bool IsSpecialContent(absl::string_view token) const;
  // Added tokens whose content the model's vocabulary does not have.
  int32_t count_not_in_model() const { return count_not_in_model_; }
  const absl::flat_hash_map<int32_t, AddedToken>& tokens() const { return tokens_; }

 private:
  // A byte trie over token strings for leftmost-longest matching.
  class Matcher {
   public:
    void Add(absl::string_view pattern, int32_t id);
    bool empty() const { return nodes_.size() <= 1; }
    // Non-overlapping leftmost-longest matches: (begin, end, id).
    struct Match {
      size_t begin;
      size_t end;
      int32_t id;
    };
    std::vector<Match> FindAll(absl::string_view text) const;

   private:
    struct Node {
      absl::flat_hash_map<unsigned char, int32_t> children;
      int32_t id = -1;
    };
    std::vector<Node> nodes_ = std::vector<Node>(1);
  };

  AddedVocabulary() = default;
  void SplitWith(const Matcher& matcher, absl::string_view text, std::vector<Split>* out) const;

  absl::flat_hash_map<int32_t, AddedToken> tokens_;
  absl::flat_hash_map<std::string, int32_t> ids_;     // content -> id
  absl::flat_hash_map<int32_t, std::string> decode_;  // id -> normalized form or content
  absl::flat_hash_set<std::string> special_contents_;
  Matcher raw_matcher_;
  Matcher normalized_matcher_;
  int32_t count_not_in_model_ = 0;
};

}  // namespace quantserve::models::internal
