#include "models/tokenizer/normalizer.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "models/tokenizer/byte_level.h"
#include "models/tokenizer/regex.h"
#include "models/tokenizer/unicode.h"

namespace quantserve::models::internal {
namespace {

class BertNormalizer final : public Normalizer {
 public:
  BertNormalizer(bool clean_text, bool handle_chinese_chars, bool strip_accents, bool lowercase)
      : clean_text_(clean_text),
        handle_chinese_chars_(handle_chinese_chars),
        strip_accents_(strip_accents),
        lowercase_(lowercase) {}

  std::string Normalize(absl::string_view text) const override {
    std::u32string chars = ToUtf32(text);
    std::u32string out;
    out.reserve(chars.size());
    // The steps run in HF's order; each one sees the previous one's output.
    if (clean_text_) {
      for (char32_t c : chars) {
        if (c == 0 || c == kReplacementChar || IsBertControl(c)) {
          continue;
        }
        out.push_back(IsWhitespace(c) ? U' ' : c);
      }
      chars.swap(out);
      out.clear();
    }
    if (handle_chinese_chars_) {
      for (char32_t c : chars) {
        if (IsChineseChar(c)) {
          out.push_back(U' ');
          out.push_back(c);
          out.push_back(U' ');
        } else {
          out.push_back(c);
        }
      }
      chars.swap(out);
      out.clear();
    }
    if (strip_accents_) {
      for (char32_t c : Nfd(chars)) {
        if (!IsNonspacingMark(c)) {
          out.push_back(c);
        }
      }
      chars.swap(out);
      out.clear();
    }
    if (lowercase_) {
      for (char32_t c : chars) {
        AppendLowercase(c, &out);
      }
      chars.swap(out);
    }
    return ToUtf8(chars);
  }

 private:
  const bool clean_text_;
  const bool handle_chinese_chars_;
  const bool strip_accents_;
  const bool lowercase_;
};

class NfcNormalizer final : public Normalizer {
 public:
  std::string Normalize(absl::string_view text) const override { return NfcUtf8(text); }
};

class NfdNormalizer final : public Normalizer {
 public:
  std::string Normalize(absl::string_view text) const override { return NfdUtf8(text); }
};

class LowercaseNormalizer final : public Normalizer {
 public:
  std::string Normalize(absl::string_view text) const override {
    std::u32string out;
    out.reserve(text.size());
    size_t pos = 0;
    while (pos < text.size()) {
      AppendLowercase(NextCodepoint(text, &pos), &out);
    }
    return ToUtf8(out);
  }
};

// Drops combining marks (all of M*, unlike BERT's Mn); like HF it does not decompose first.
class StripAccentsNormalizer final : public Normalizer {
 public:
  std::string Normalize(absl::string_view text) const override {
    std::string out;
    out.reserve(text.size());
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t begin = pos;
      if (!IsCombiningMark(NextCodepoint(text, &pos))) {
        absl::StrAppend(&out, text.substr(begin, pos - begin));
      }
    }
    return out;
  }
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}

  std::string Normalize(absl::string_view text) const override {
    std::u32string chars = ToUtf32(text);
    size_t begin = 0;
    size_t end = chars.size();
    if (left_) {
      while (begin < end && IsWhitespace(chars[begin])) {
        ++begin;
      }
    }
    if (right_) {
      while (end > begin && IsWhitespace(chars[end - 1])) {
        --end;
      }
    }
    return ToUtf8(std::u32string_view(chars).substr(begin, end - begin));
  }

 private:
  const bool left_;
  const bool right_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}

  std::string Normalize(absl::string_view text) const override {
    std::string out;
    size_t last = 0;
    for (const auto& [begin, end] : pattern_->FindAll(text)) {
      absl::StrAppend(&out, text.substr(last, begin - last));
      out.append(content_);
      last = end;
    }
    absl::StrAppend(&out, text.substr(last));
    return out;
  }

 private:
  const std::unique_ptr<Regex> pattern_;
  const std::string content_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}

  std::string Normalize(absl::string_view text) const override {
    return text.empty() ? std::string() : absl::StrCat(prefix_, text);
  }

 private:
  const std::string prefix_;
};

class ByteLevelNormalizer final : public Normalizer {
 public:
  std::string Normalize(absl::string_view text) const override { return BytesToByteLevel(text); }
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}

  std::string Normalize(absl::string_view text) const override {
    std::string current(text);
    for (const auto& step : steps_) {
      current = step->Normalize(current);
    }
    return current;
  }

 private:
  const std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> CreateNormalizer(const Json& config,
                                                             absl::string_view path) {
  QS_ASSIGN_OR_RETURN(const std::string type, GetType(config, path));
  if (type == "BertNormalizer") {
    QS_ASSIGN_OR_RETURN(const bool clean_text, GetBool(config, "clean_text", true, path));
    QS_ASSIGN_OR_RETURN(const bool chinese, GetBool(config, "handle_chinese_chars", true, path));
    QS_ASSIGN_OR_RETURN(const bool lowercase, GetBool(config, "lowercase", true, path));
    // strip_accents: null means "follow lowercase", as in BERT's original code.
    QS_ASSIGN_OR_RETURN(const bool strip_accents,
                        GetBool(config, "strip_accents", lowercase, path));
    return std::make_unique<BertNormalizer>(clean_text, chinese, strip_accents, lowercase);
  }
  if (type == "NFC") {
    return std::make_unique<NfcNormalizer>();
  }
  if (type == "NFD") {
    return std::make_unique<NfdNormalizer>();
  }
  if (type == "Lowercase") {
    return std::make_unique<LowercaseNormalizer>();
  }
  if (type == "StripAccents") {
    return std::make_unique<StripAccentsNormalizer>();
  }
  if (type == "Strip") {
    QS_ASSIGN_OR_RETURN(const bool left, GetBool(config, "strip_left", true, path));
    QS_ASSIGN_OR_RETURN(const bool right, GetBool(config, "strip_right", true, path));
    return std::make_unique<StripNormalizer>(left, right);
  }
  if (type == "Replace") {
    QS_ASSIGN_OR_RETURN(const Pattern pattern, GetPattern(config, "pattern", path));
    QS_ASSIGN_OR_RETURN(std::string content, GetString(config, "content", "", path));
    auto regex = Regex::Create(pattern.text, !pattern.is_regex);
    if (!regex.ok()) {
      return common::Annotate(regex.status(), FieldPath(path, "pattern"));
    }
    return std::make_unique<ReplaceNormalizer>(*std::move(regex), std::move(content));
  }
  if (type == "Prepend") {
    QS_ASSIGN_OR_RETURN(std::string prefix, GetString(config, "prepend", "", path));
    return std::make_unique<PrependNormalizer>(std::move(prefix));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelNormalizer>();
  }
  if (type == "Sequence") {
    QS_ASSIGN_OR_RETURN(auto steps,
                        ParseSequence<Normalizer>(config, "normalizers", path, &CreateNormalizer));
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: unsupported normalizer type '", type, "' at ", path));
}

}  // namespace quantserve::models::internal
