#pragma once
// Tokenizer: HF `tokenizers`-compatible encoding and decoding from a tokenizer.json file, in
// plain C++ (no LibTorch, no Python).
//
// Where it sits: the engine encodes prompts and decodes generated ids with it; a model's
// tokenizer is created once at load from <model dir>/tokenizer.json and lives as long as the
// model. It runs HF's pipeline: added tokens are cut out of the raw text, the rest goes through
// normalizer -> pre-tokenizer -> model (BPE or WordPiece) -> post-processor; decoding maps ids
// to token strings and runs the decoder. Ids equal HF's `Tokenizer.encode(text,
// add_special_tokens=...).ids` for the supported components (see the headers in this folder
// for the list); unsupported component types are refused at creation, never approximated.
//
// Not applied: tokenizer.json's "truncation" and "padding" (callers enforce context limits;
// truncation_max_length() reports the file's value) and pair-sequence templates.
//
// Thread-safety: immutable after creation; every method may be called concurrently.
// Input text: invalid UTF-8 is not an error; each ill-formed sequence is read as U+FFFD first
// (the policy of Python's `bytes.decode("utf-8", "replace")`).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace quantserve::models {
namespace internal {
class AddedVocabulary;
class Decoder;
class Model;
class Normalizer;
class PostProcessor;
class PreTokenizer;
}  // namespace internal

class Tokenizer {
 public:
  // Errors: NOT_FOUND / PERMISSION_DENIED style codes for unreadable files (from the OS error),
  // INVALID_ARGUMENT for malformed JSON or unsupported/invalid components (the message names the
  // field and type).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(
      const std::string& tokenizer_json_path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json_text);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // HF `encode(text, add_special_tokens=...).ids` (no truncation, no padding).
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const;
  // HF `decode(ids, skip_special_tokens=...)`. Ids that name no token are skipped.
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const;

  // The bytes one token stands for, for incremental (streaming) detokenization: with a
  // byte-level decoder the raw bytes its characters encode (possibly a partial UTF-8
  // sequence); otherwise the token string itself, as the vocabulary spells it (WordPiece "##"
  // prefixes included). Empty for unknown ids.
  std::string TokenBytes(int32_t id) const;
  // True when the decoder is ByteLevel: TokenBytes() of consecutive tokens concatenate to the
  // decoded text, so streaming needs no re-decoding.
  bool has_byte_level_decoder() const { return byte_level_decoder_; }

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token string of `id` (added tokens first, as HF); empty for unknown ids.
  std::string IdToToken(int32_t id) const;
  // HF `get_vocab_size(with_added_tokens=True)`.
  int32_t vocab_size() const;
  // True if `id` is an added token marked special (skipped by Decode(..., true)).
  bool IsSpecial(int32_t id) const;

  // The special token the post-processor puts first / last when add_special_tokens is set
  // (e.g. <|begin_of_text|>, [CLS] / [SEP]). eos_id() falls back to a special added token with
  // a conventional end-of-text name (</s>, <|endoftext|>, <|end_of_text|>, <eos>) when the
  // template adds none; tokenizer_config.json / generation_config.json may say otherwise and
  // take precedence in the caller.
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  std::optional<int32_t> unk_id() const;
  // The file's "truncation.max_length", if any (informational; Encode never truncates).
  std::optional<int32_t> truncation_max_length() const { return truncation_max_length_; }

 private:
  Tokenizer();

  std::unique_ptr<internal::Normalizer> normalizer_;         // may be null
  std::unique_ptr<internal::PreTokenizer> pre_tokenizer_;    // may be null
  std::unique_ptr<internal::Model> model_;                   // never null
  std::unique_ptr<internal::PostProcessor> post_processor_;  // may be null
  std::unique_ptr<internal::Decoder> decoder_;               // may be null
  std::unique_ptr<internal::AddedVocabulary> added_;         // never null
  bool byte_level_decoder_ = false;
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
  std::optional<int32_t> truncation_max_length_;
};

}  // namespace quantserve::models
