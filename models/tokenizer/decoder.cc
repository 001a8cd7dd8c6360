#include "models/tokenizer/decoder.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"
#include "models/tokenizer/byte_level.h"
#include "models/tokenizer/regex.h"
#include "models/tokenizer/unicode.h"

namespace quantserve::models::internal {
namespace {

class ByteLevelDecoder final : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& token : *tokens) {
      std::optional<std::string> raw = ByteLevelToBytes(token);
      bytes += raw.has_value() ? *raw : token;  // not byte-level (e.g. an added token): as is
    }
    tokens->assign(1, SanitizeUtf8(bytes));
  }
  bool IsByteLevel() const override { return true; }
};

class WordPieceDecoder final : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup)
      : prefix_(std::move(prefix)), cleanup_(cleanup) {}

  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& token = (*tokens)[i];
      if (i != 0) {
        if (token.rfind(prefix_, 0) == 0) {
          token.erase(0, prefix_.size());
        } else {
          token.insert(0, " ");
        }
      }
      if (cleanup_) {
        token = Cleanup(token);
      }
    }
  }

  // BERT's detokenization cleanup, applied per token like HF does.
  static std::string Cleanup(absl::string_view text) {
    std::string out(text);
    for (const auto& [from, to] :
         std::initializer_list<std::pair<absl::string_view, absl::string_view>>{
             {" .", "."},
             {" ?", "?"},
             {" !", "!"},
             {" ,", ","},
             {" ' ", "'"},
             {" n't", "n't"},
             {" 'm", "'m"},
             {" do not", " don't"},
             {" 's", "'s"},
             {" 've", "'ve"},
             {" 're", "'re"}}) {
      out = absl::StrReplaceAll(out, {{from, to}});
    }
    return out;
  }

 private:
  const std::string prefix_;
  const bool cleanup_;
};

class BpeDecoder final : public Decoder {
 public:
  explicit BpeDecoder(std::string suffix) : suffix_(std::move(suffix)) {}

  void DecodeChain(std::vector<std::string>* tokens) const override {
    if (suffix_.empty()) {
      return;
    }
    for (size_t i = 0; i < tokens->size(); ++i) {
      (*tokens)[i] =
          absl::StrReplaceAll((*tokens)[i], {{suffix_, i + 1 == tokens->size() ? "" : " "}});
    }
  }

 private:
  const std::string suffix_;
};

// "<0xXX>" tokens become the bytes they stand for; each invalid run becomes U+FFFD per byte.
class ByteFallbackDecoder final : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) {
        return;
      }
      if (IsValidUtf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) {
          out.emplace_back("\xEF\xBF\xBD");
        }
      }
      pending.clear();
    };
    for (std::string& token : *tokens) {
      int byte = ParseByteToken(token);
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    tokens->swap(out);
  }

 private:
  static int HexValue(char c) {
    if (c >= '0' && c <= '9') {
      return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
      return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
      return c - 'A' + 10;
    }
    return -1;
  }
  static int ParseByteToken(absl::string_view token) {
    if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') {
      return -1;
    }
    const int hi = HexValue(token[3]);
    const int lo = HexValue(token[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class FuseDecoder final : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string joined;
    for (const std::string& token : *tokens) {
      joined += token;
    }
    tokens->assign(1, std::move(joined));
  }
};

// Removes up to `start` leading and `stop` trailing `content` characters from every token.
class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}

  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      std::u32string chars = ToUtf32(token);
      size_t begin = 0;
      while (begin < start_ && begin < chars.size() && chars[begin] == content_) {
        ++begin;
      }
      size_t end = chars.size();
      for (size_t i = 0; i < stop_ && end > begin && chars[end - 1] == content_; ++i) {
        --end;
      }
      token = ToUtf8(std::u32string_view(chars).substr(begin, end - begin));
    }
  }

 private:
  const char32_t content_;
  const size_t start_;
  const size_t stop_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}

  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      std::string out;
      size_t last = 0;
      for (const auto& [begin, end] : pattern_->FindAll(token)) {
        out.append(token, last, begin - last);
        out += content_;
        last = end;
      }
      out.append(token, last);
      token = std::move(out);
    }
  }

 private:
  const std::unique_ptr<Regex> pattern_;
  const std::string content_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}

  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps_) {
      step->DecodeChain(tokens);
    }
  }
  bool IsByteLevel() const override {
    for (const auto& step : steps_) {
      if (step->IsByteLevel()) {
        return true;
      }
    }
    return false;
  }

 private:
  const std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> CreateDecoder(const Json& config, absl::string_view path) {
  QS_ASSIGN_OR_RETURN(const std::string type, GetType(config, path));
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelDecoder>();
  }
  if (type == "WordPiece") {
    QS_ASSIGN_OR_RETURN(std::string prefix, GetString(config, "prefix", "##", path));
    QS_ASSIGN_OR_RETURN(const bool cleanup, GetBool(config, "cleanup", true, path));
    return std::make_unique<WordPieceDecoder>(std::move(prefix), cleanup);
  }
  if (type == "BPEDecoder") {
    QS_ASSIGN_OR_RETURN(std::string suffix, GetString(config, "suffix", "</w>", path));
    return std::make_unique<BpeDecoder>(std::move(suffix));
  }
  if (type == "ByteFallback") {
    return std::make_unique<ByteFallbackDecoder>();
  }
  if (type == "Fuse") {
    return std::make_unique<FuseDecoder>();
  }
  if (type == "Strip") {
    QS_ASSIGN_OR_RETURN(const std::string content, GetString(config, "content", " ", path));
    QS_ASSIGN_OR_RETURN(const int64_t start, GetInt(config, "start", 0, path));
    QS_ASSIGN_OR_RETURN(const int64_t stop, GetInt(config, "stop", 0, path));
    const std::u32string content_chars = ToUtf32(content);
    if (content_chars.size() != 1 || start < 0 || stop < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer.json: ", path, ": Strip needs one content character and start, stop >= 0"));
    }
    return std::make_unique<StripDecoder>(content_chars[0], static_cast<size_t>(start),
                                          static_cast<size_t>(stop));
  }
  if (type == "Replace") {
    QS_ASSIGN_OR_RETURN(const Pattern pattern, GetPattern(config, "pattern", path));
    QS_ASSIGN_OR_RETURN(std::string content, GetString(config, "content", "", path));
    auto regex = Regex::Create(pattern.text, !pattern.is_regex);
    if (!regex.ok()) {
      return common::Annotate(regex.status(), FieldPath(path, "pattern"));
    }
    return std::make_unique<ReplaceDecoder>(*std::move(regex), std::move(content));
  }
  if (type == "Sequence") {
    QS_ASSIGN_OR_RETURN(auto steps,
                        ParseSequence<Decoder>(config, "decoders", path, &CreateDecoder));
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: unsupported decoder type '", type, "' at ", path));
}

}  // namespace quantserve::models::internal
