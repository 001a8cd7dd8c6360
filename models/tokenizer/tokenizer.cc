#include "models/tokenizer/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/env.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "models/tokenizer/added_vocabulary.h"
#include "models/tokenizer/byte_level.h"
#include "models/tokenizer/decoder.h"
#include "models/tokenizer/json_util.h"
#include "models/tokenizer/model.h"
#include "models/tokenizer/normalizer.h"
#include "models/tokenizer/post_processor.h"
#include "models/tokenizer/pre_tokenizer.h"
#include "models/tokenizer/unicode.h"
#include "common/json_nesting.h"

namespace quantserve::models {
namespace {

// Debian's Abseil has its own string_view type; the public API uses std's.
absl::string_view ToAbsl(std::string_view text) { return {text.data(), text.size()}; }

using internal::Json;

bool Present(const Json& root, const char* key) {
  return root.contains(key) && !root[key].is_null();
}

absl::StatusOr<std::vector<std::pair<internal::AddedToken, int64_t>>> ParseAddedTokens(
    const Json& root) {
  std::vector<std::pair<internal::AddedToken, int64_t>> tokens;
  if (!Present(root, "added_tokens")) {
    return tokens;
  }
  QS_ASSIGN_OR_RETURN(const Json* items, internal::GetArray(root, "added_tokens", ""));
  for (size_t i = 0; i < items->size(); ++i) {
    const Json& item = (*items)[i];
    const std::string path = absl::StrCat("added_tokens[", i, "]");
    if (!item.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: ", path, " must be an object"));
    }
    internal::AddedToken token;
    QS_ASSIGN_OR_RETURN(std::optional<std::string> content,
                        internal::GetOptionalString(item, "content", path));
    if (!content.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: ", path, ".content is missing"));
    }
    token.content = std::move(*content);
    QS_ASSIGN_OR_RETURN(token.special, internal::GetBool(item, "special", false, path));
    QS_ASSIGN_OR_RETURN(token.single_word, internal::GetBool(item, "single_word", false, path));
    QS_ASSIGN_OR_RETURN(token.lstrip, internal::GetBool(item, "lstrip", false, path));
    QS_ASSIGN_OR_RETURN(token.rstrip, internal::GetBool(item, "rstrip", false, path));
    QS_ASSIGN_OR_RETURN(token.normalized,
                        internal::GetBool(item, "normalized", !token.special, path));
    QS_ASSIGN_OR_RETURN(const int64_t id, internal::GetInt(item, "id", -1, path));
    tokens.emplace_back(std::move(token), id);
  }
  return tokens;
}

constexpr int32_t kSequenceMarker = -1;  // stands for "the text's ids" when probing templates

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(
    const std::string& tokenizer_json_path) {
  // Through the Env, as every model file: the error names the path with the errno's code.
  absl::StatusOr<std::string> contents =
      common::Env::Default()->ReadFileToString(tokenizer_json_path);
  if (!contents.ok()) {
    return absl::Status(contents.status().code(),
                        absl::StrCat("cannot open tokenizer file: ", contents.status().message()));
  }
  auto tokenizer = FromJson(*contents);
  if (!tokenizer.ok()) {
    return common::Annotate(tokenizer.status(), tokenizer_json_path);
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json_text) {
  if (absl::Status s = common::CheckJsonNesting("tokenizer.json", json_text); !s.ok()) return s;
  const Json root =
      Json::parse(json_text.begin(), json_text.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError("tokenizer.json: not valid JSON");
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: the top level must be an object");
  }
  // The accessors below check kinds before reading; this guards against any nlohmann
  // exception we did not foresee, so malformed files can never take the process down.
  try {
    auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer());
    if (Present(root, "version") &&
        !(root["version"].is_string() && root["version"].get<std::string>() == "1.0")) {
      return absl::InvalidArgumentError("tokenizer.json: unsupported version (expected \"1.0\")");
    }
    if (!Present(root, "model")) {
      return absl::InvalidArgumentError("tokenizer.json: missing field model");
    }
    QS_ASSIGN_OR_RETURN(tokenizer->model_, internal::CreateModel(root["model"], "model"));
    if (Present(root, "normalizer")) {
      QS_ASSIGN_OR_RETURN(tokenizer->normalizer_,
                          internal::CreateNormalizer(root["normalizer"], "normalizer"));
    }
    if (Present(root, "pre_tokenizer")) {
      QS_ASSIGN_OR_RETURN(tokenizer->pre_tokenizer_,
                          internal::CreatePreTokenizer(root["pre_tokenizer"], "pre_tokenizer"));
    }
    if (Present(root, "post_processor")) {
      QS_ASSIGN_OR_RETURN(tokenizer->post_processor_,
                          internal::CreatePostProcessor(root["post_processor"], "post_processor"));
    }
    if (Present(root, "decoder")) {
      QS_ASSIGN_OR_RETURN(tokenizer->decoder_, internal::CreateDecoder(root["decoder"], "decoder"));
      tokenizer->byte_level_decoder_ = tokenizer->decoder_->IsByteLevel();
    }
    if (Present(root, "truncation")) {
      QS_ASSIGN_OR_RETURN(const int64_t max_length,
                          internal::GetInt(root["truncation"], "max_length", -1, "truncation"));
      if (max_length >= 0 && max_length <= INT32_MAX) {
        tokenizer->truncation_max_length_ = static_cast<int32_t>(max_length);
      }
    }

    QS_ASSIGN_OR_RETURN(const auto added_tokens, ParseAddedTokens(root));
    std::vector<internal::AddedToken> tokens;
    tokens.reserve(added_tokens.size());
    for (const auto& [token, id] : added_tokens) {
      tokens.push_back(token);
    }
    QS_ASSIGN_OR_RETURN(tokenizer->added_,
                        internal::AddedVocabulary::Create(tokens, *tokenizer->model_,
                                                          tokenizer->normalizer_.get()));
    for (const auto& [token, id] : added_tokens) {
      std::optional<int32_t> assigned = tokenizer->TokenToId(token.content);
      if (id >= 0 && assigned.has_value() && *assigned != id) {
        // HF assigns ids the same way and only warns; so do we.
        QS_LOG(WARNING) << "tokenizer.json: added token got a different id than listed"
                        << common::Kv("token", token.content) << common::Kv("listed", id)
                        << common::Kv("assigned", *assigned);
      }
    }

    if (tokenizer->post_processor_ != nullptr) {
      std::vector<int32_t> probe = {kSequenceMarker};
      tokenizer->post_processor_->Process(&probe, /*add_special_tokens=*/true);
      auto marker = std::find(probe.begin(), probe.end(), kSequenceMarker);
      if (marker != probe.begin() && marker != probe.end()) {
        tokenizer->bos_id_ = probe.front();
      }
      if (marker != probe.end() && marker + 1 != probe.end()) {
        tokenizer->eos_id_ = probe.back();
      }
    }
    if (!tokenizer->eos_id_.has_value()) {
      for (const char* name : {"</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"}) {
        std::optional<int32_t> id = tokenizer->added_->TokenToId(name);
        if (id.has_value() && tokenizer->IsSpecial(*id)) {
          tokenizer->eos_id_ = id;
          break;
        }
      }
    }
    return tokenizer;
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: malformed: ", e.what()));
  }
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  const std::string clean = internal::SanitizeUtf8(ToAbsl(text));
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
  for (internal::AddedVocabulary::Split& split :
       added_->ExtractAndNormalize(clean, normalizer_.get())) {
    if (split.id.has_value()) {
      ids.push_back(*split.id);
      continue;
    }
    pieces.clear();
    pieces.push_back(std::move(split.text));
    if (pre_tokenizer_ != nullptr) {
      pre_tokenizer_->PreTokenize(&pieces);
    }
    for (const std::string& piece : pieces) {
      model_->Tokenize(piece, &ids);
    }
  }
  if (post_processor_ != nullptr) {
    post_processor_->Process(&ids, add_special_tokens);
  }
  return ids;
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = added_->IdToToken(id);
    if (token == nullptr) {
      token = model_->IdToToken(id);
    }
    if (token == nullptr || (skip_special_tokens && added_->IsSpecialContent(*token))) {
      continue;
    }
    tokens.push_back(*token);
  }
  if (decoder_ == nullptr) {
    return absl::StrJoin(tokens, " ");
  }
  decoder_->DecodeChain(&tokens);
  return absl::StrJoin(tokens, "");
}

std::string Tokenizer::TokenBytes(int32_t id) const {
  std::string token = IdToToken(id);
  if (byte_level_decoder_) {
    std::optional<std::string> bytes = internal::ByteLevelToBytes(token);
    if (bytes.has_value()) {
      return *std::move(bytes);
    }
  }
  return token;
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  std::optional<int32_t> id = added_->TokenToId(ToAbsl(token));
  return id.has_value() ? id : model_->TokenToId(ToAbsl(token));
}

std::string Tokenizer::IdToToken(int32_t id) const {
  const std::string* token = added_->IdToToken(id);
  if (token == nullptr) {
    token = model_->IdToToken(id);
  }
  return token == nullptr ? std::string() : *token;
}

int32_t Tokenizer::vocab_size() const {
  return model_->vocab_size() + added_->count_not_in_model();
}

bool Tokenizer::IsSpecial(int32_t id) const {
  const internal::AddedToken* token = added_->Find(id);
  return token != nullptr && token->special;
}

std::optional<int32_t> Tokenizer::unk_id() const { return model_->unk_id(); }

}  // namespace quantserve::models
