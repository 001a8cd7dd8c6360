#include "models/tokenizer/added_vocabulary.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "models/tokenizer/unicode.h"

namespace quantserve::models::internal {
namespace {

bool EndsWithWordChar(absl::string_view text) {
  if (text.empty()) {
    return false;
  }
  size_t pos = text.size() - 1;
  while (pos > 0 && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) {
    --pos;
  }
  return IsWordChar(NextCodepoint(text, &pos));
}

bool StartsWithWordChar(absl::string_view text) {
  size_t pos = 0;
  return !text.empty() && IsWordChar(NextCodepoint(text, &pos));
}

// Start of the whitespace run that ends `text` (text.size() if none).
size_t TrailingWhitespaceStart(absl::string_view text) {
  size_t start = text.size();
  while (start > 0) {
    size_t pos = start - 1;
    while (pos > 0 && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) {
      --pos;
    }
    size_t probe = pos;
    if (!IsWhitespace(NextCodepoint(text, &probe))) {
      break;
    }
    start = pos;
  }
  return start;
}

// Length in bytes of the whitespace run that starts `text`.
size_t LeadingWhitespaceLength(absl::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t next = pos;
    if (!IsWhitespace(NextCodepoint(text, &next))) {
      break;
    }
    pos = next;
  }
  return pos;
}

}  // namespace

void AddedVocabulary::Matcher::Add(absl::string_view pattern, int32_t id) {
  int32_t node = 0;
  for (char c : pattern) {
    const auto byte = static_cast<unsigned char>(c);
    auto it = nodes_[node].children.find(byte);
    if (it == nodes_[node].children.end()) {
      const auto child = static_cast<int32_t>(nodes_.size());
      nodes_[node].children.emplace(byte, child);
      nodes_.emplace_back();
      node = child;
    } else {
      node = it->second;
    }
  }
  nodes_[node].id = id;
}

std::vector<AddedVocabulary::Matcher::Match> AddedVocabulary::Matcher::FindAll(
    absl::string_view text) const {
  std::vector<Match> matches;
  size_t begin = 0;
  while (begin < text.size()) {
    int32_t node = 0;
    size_t best_end = 0;
    int32_t best_id = -1;
    for (size_t i = begin; i < text.size(); ++i) {
      auto it = nodes_[node].children.find(static_cast<unsigned char>(text[i]));
      if (it == nodes_[node].children.end()) {
        break;
      }
      node = it->second;
      if (nodes_[node].id >= 0) {
        best_end = i + 1;
        best_id = nodes_[node].id;
      }
    }
    if (best_id >= 0) {
      matches.push_back(Match{begin, best_end, best_id});
      begin = best_end;
    } else {
      ++begin;
    }
  }
  return matches;
}

absl::StatusOr<std::unique_ptr<AddedVocabulary>> AddedVocabulary::Create(
    const std::vector<AddedToken>& tokens, const Model& model, const Normalizer* normalizer) {
  auto vocab = std::unique_ptr<AddedVocabulary>(new AddedVocabulary());
  int64_t next_id = model.vocab_size();
  for (const AddedToken& token : tokens) {
    if (token.content.empty()) {
      continue;
    }
    if (auto it = vocab->ids_.find(token.content); it != vocab->ids_.end()) {
      const AddedToken& old = vocab->tokens_[it->second];
      if (old.single_word == token.single_word && old.lstrip == token.lstrip &&
          old.rstrip == token.rstrip && old.normalized == token.normalized &&
          old.special == token.special) {
        continue;  // exact duplicate
      }
    }
    int64_t id;
    if (std::optional<int32_t> existing = vocab->TokenToId(token.content)) {
      id = *existing;
    } else if (std::optional<int32_t> in_model = model.TokenToId(token.content)) {
      id = *in_model;
    } else {
      id = next_id++;
    }
    if (id > INT32_MAX) {
      return absl::InvalidArgumentError("tokenizer.json: too many added tokens");
    }
    const auto id32 = static_cast<int32_t>(id);
    std::string decoded = token.content;
    if (token.normalized && normalizer != nullptr) {
      decoded = normalizer->Normalize(token.content);
    }
    vocab->ids_[token.content] = id32;
    vocab->decode_[id32] = std::move(decoded);
    if (token.special) {
      vocab->special_contents_.insert(token.content);
    }
    vocab->tokens_[id32] = token;
  }
  for (const auto& [id, token] : vocab->tokens_) {
    if (!model.TokenToId(token.content).has_value()) {
      ++vocab->count_not_in_model_;
    }
    if (token.normalized) {
      vocab->normalized_matcher_.Add(vocab->decode_[id], id);
    } else {
      vocab->raw_matcher_.Add(token.content, id);
    }
  }
  return vocab;
}

void AddedVocabulary::SplitWith(const Matcher& matcher, absl::string_view text,
                                std::vector<Split>* out) const {
  if (matcher.empty()) {
    if (!text.empty()) {
      out->push_back(Split{std::string(text), std::nullopt});
    }
    return;
  }
  size_t start_offset = 0;
  for (const Matcher::Match& match : matcher.FindAll(text)) {
    size_t start = match.begin;
    size_t stop = match.end;
    const AddedToken& token = tokens_.at(match.id);
    if (token.single_word) {
      const bool space_before = start == 0 || !EndsWithWordChar(text.substr(0, start));
      const bool space_after = stop == text.size() || !StartsWithWordChar(text.substr(stop));
      if (!space_before || !space_after) {
        continue;
      }
    }
    if (token.lstrip) {
      start = std::max(TrailingWhitespaceStart(text.substr(0, start)), start_offset);
    }
    if (token.rstrip) {
      stop += LeadingWhitespaceLength(text.substr(stop));
    }
    if (start_offset < start) {
      out->push_back(
          Split{std::string(text.substr(start_offset, start - start_offset)), std::nullopt});
    }
    out->push_back(Split{std::string(text.substr(start, stop - start)), match.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) {
    out->push_back(Split{std::string(text.substr(start_offset)), std::nullopt});
  }
}

std::vector<AddedVocabulary::Split> AddedVocabulary::ExtractAndNormalize(
    absl::string_view text, const Normalizer* normalizer) const {
  std::vector<Split> raw;
  SplitWith(raw_matcher_, text, &raw);
  std::vector<Split> out;
  for (Split& split : raw) {
    if (split.id.has_value()) {
      out.push_back(std::move(split));
      continue;
    }
    const std::string normalized =
        normalizer != nullptr ? normalizer->Normalize(split.text) : std::move(split.text);
    SplitWith(normalized_matcher_, normalized, &out);
  }
  return out;
}

std::optional<int32_t> AddedVocabulary::TokenToId(absl::string_view content) const {
  auto it = ids_.find(content);
  return it == ids_.end() ? std::nullopt : std::optional<int32_t>(it->second);
}

const std::string* AddedVocabulary::IdToToken(int32_t id) const {
  auto it = decode_.find(id);
  return it == decode_.end() ? nullptr : &it->second;
}

const AddedToken* AddedVocabulary::Find(int32_t id) const {
  auto it = tokens_.find(id);
  return it == tokens_.end() ? nullptr : &it->second;
}

bool AddedVocabulary::IsSpecialContent(absl::string_view token) const {
  return special_contents_.contains(token);
}

}  // namespace quantserve::models::internal
