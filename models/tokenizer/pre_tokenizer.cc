#include "models/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "models/tokenizer/byte_level.h"
#include "models/tokenizer/regex.h"
#include "models/tokenizer/unicode.h"

namespace quantserve::models::internal {
namespace {

// HF's SplitDelimiterBehavior: what happens to the matched delimiters.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// A byte span of the text and whether it matched the delimiter pattern. Segments tile the text.
struct Segment {
  size_t begin;
  size_t end;
  bool is_match;
};

absl::StatusOr<SplitBehavior> ParseBehavior(const Json& config, absl::string_view path) {
  QS_ASSIGN_OR_RETURN(const std::string name, GetString(config, "behavior", "Isolated", path));
  static constexpr std::pair<absl::string_view, SplitBehavior> kNames[] = {
      {"Removed", SplitBehavior::kRemoved},
      {"Isolated", SplitBehavior::kIsolated},
      {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
      {"MergedWithNext", SplitBehavior::kMergedWithNext},
      {"Contiguous", SplitBehavior::kContiguous},
  };
  for (const auto& [known, behavior] : kNames) {
    if (name == known) {
      return behavior;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", FieldPath(path, "behavior"),
                                                 ": unknown split behavior '", name, "'"));
}

// Turns matched spans into segments tiling `size` bytes (HF's Pattern::find_matches).
std::vector<Segment> SegmentsFromMatches(size_t size,
                                         const std::vector<std::pair<size_t, size_t>>& matches) {
  std::vector<Segment> segments;
  if (size == 0) {
    segments.push_back({0, 0, false});
    return segments;
  }
  size_t prev = 0;
  for (const auto& [begin, end] : matches) {
    if (prev != begin) {
      segments.push_back({prev, begin, false});
    }
    segments.push_back({begin, end, true});
    prev = end;
  }
  if (prev != size) {
    segments.push_back({prev, size, false});
  }
  return segments;
}

// Segments where each character satisfying `is_delimiter` is its own match.
std::vector<Segment> SegmentsFromCharClass(absl::string_view text,
                                           const std::function<bool(char32_t)>& is_delimiter) {
  std::vector<std::pair<size_t, size_t>> matches;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t begin = pos;
    if (is_delimiter(NextCodepoint(text, &pos))) {
      matches.emplace_back(begin, pos);
    }
  }
  return SegmentsFromMatches(text.size(), matches);
}

// Applies `behavior` to the segments and appends the non-empty pieces to `out`.
void SplitInto(absl::string_view text, std::vector<Segment> segments, SplitBehavior behavior,
               std::vector<std::string>* out) {
  std::vector<std::pair<size_t, size_t>> spans;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Segment& s : segments) {
        spans.emplace_back(s.begin, s.end);
      }
      break;
    case SplitBehavior::kRemoved:
      for (const Segment& s : segments) {
        if (!s.is_match) {
          spans.emplace_back(s.begin, s.end);
        }
      }
      break;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !spans.empty()) {
          spans.back().second = s.end;
        } else {
          spans.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !spans.empty()) {
          spans.back().second = s.end;
        } else {
          spans.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !spans.empty()) {
          spans.back().first = it->begin;
        } else {
          spans.emplace_back(it->begin, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(spans.begin(), spans.end());
      break;
    }
  }
  for (const auto& [begin, end] : spans) {
    if (end > begin) {
      out->emplace_back(text.substr(begin, end - begin));
    }
  }
}

// Runs `split_one` on each piece and replaces the pieces with the concatenated results.
void SplitEach(std::vector<std::string>* pieces,
               const std::function<void(absl::string_view, std::vector<std::string>*)>& split_one) {
  std::vector<std::string> out;
  out.reserve(pieces->size());
  for (const std::string& piece : *pieces) {
    if (!piece.empty()) {
      split_one(piece, &out);
    }
  }
  pieces->swap(out);
}

constexpr absl::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}

  void PreTokenize(std::vector<std::string>* pieces) const override {
    SplitEach(pieces, [this](absl::string_view piece, std::vector<std::string>* out) {
      std::string text(piece);
      if (add_prefix_space_ && text.front() != ' ') {
        text.insert(text.begin(), ' ');
      }
      const size_t first = out->size();
      if (regex_ != nullptr) {
        SplitInto(text, SegmentsFromMatches(text.size(), regex_->FindAll(text)),
                  SplitBehavior::kIsolated, out);
      } else {
        out->push_back(std::move(text));
      }
      for (size_t i = first; i < out->size(); ++i) {
        (*out)[i] = BytesToByteLevel((*out)[i]);
      }
    });
  }

 private:
  const bool add_prefix_space_;
  const std::unique_ptr<Regex> regex_;  // null when use_regex is false
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> regex, SplitBehavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}

  void PreTokenize(std::vector<std::string>* pieces) const override {
    SplitEach(pieces, [this](absl::string_view piece, std::vector<std::string>* out) {
      std::vector<Segment> segments = SegmentsFromMatches(piece.size(), regex_->FindAll(piece));
      if (invert_) {
        for (Segment& s : segments) {
          s.is_match = !s.is_match;
        }
      }
      SplitInto(piece, std::move(segments), behavior_, out);
    });
  }

 private:
  const std::unique_ptr<Regex> regex_;
  const SplitBehavior behavior_;
  const bool invert_;
};

// Splits on one character class with a fixed behavior (BERT, WhitespaceSplit, Punctuation).
class CharClassPreTokenizer final : public PreTokenizer {
 public:
  CharClassPreTokenizer(bool (*is_delimiter)(char32_t), SplitBehavior behavior)
      : is_delimiter_(is_delimiter), behavior_(behavior) {}

  void PreTokenize(std::vector<std::string>* pieces) const override {
    SplitEach(pieces, [this](absl::string_view piece, std::vector<std::string>* out) {
      SplitInto(piece, SegmentsFromCharClass(piece, is_delimiter_), behavior_, out);
    });
  }

 private:
  bool (*const is_delimiter_)(char32_t);
  const SplitBehavior behavior_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}

  void PreTokenize(std::vector<std::string>* pieces) const override {
    for (const auto& step : steps_) {
      step->PreTokenize(pieces);
    }
  }

 private:
  const std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

absl::StatusOr<std::unique_ptr<Regex>> CompileAt(absl::string_view pattern, bool literal,
                                                 absl::string_view path) {
  auto regex = Regex::Create(pattern, literal);
  if (!regex.ok()) {
    return common::Annotate(regex.status(), FieldPath(path, "pattern"));
  }
  return regex;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> CreatePreTokenizer(const Json& config,
                                                                 absl::string_view path) {
  QS_ASSIGN_OR_RETURN(const std::string type, GetType(config, path));
  if (type == "ByteLevel") {
    QS_ASSIGN_OR_RETURN(const bool prefix, GetBool(config, "add_prefix_space", true, path));
    QS_ASSIGN_OR_RETURN(const bool use_regex, GetBool(config, "use_regex", true, path));
    std::unique_ptr<Regex> regex;
    if (use_regex) {
      QS_ASSIGN_OR_RETURN(regex, CompileAt(kGpt2Pattern, /*literal=*/false, path));
    }
    return std::make_unique<ByteLevelPreTokenizer>(prefix, std::move(regex));
  }
  if (type == "Split") {
    QS_ASSIGN_OR_RETURN(const Pattern pattern, GetPattern(config, "pattern", path));
    QS_ASSIGN_OR_RETURN(const SplitBehavior behavior, ParseBehavior(config, path));
    QS_ASSIGN_OR_RETURN(const bool invert, GetBool(config, "invert", false, path));
    QS_ASSIGN_OR_RETURN(auto regex, CompileAt(pattern.text, !pattern.is_regex, path));
    return std::make_unique<SplitPreTokenizer>(std::move(regex), behavior, invert);
  }
  if (type == "BertPreTokenizer") {
    // Whitespace is removed, then punctuation isolated; whitespace never reaches the second
    // pass, so one combined pass would differ only in how it treats both at once.
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    steps.push_back(
        std::make_unique<CharClassPreTokenizer>(&IsWhitespace, SplitBehavior::kRemoved));
    steps.push_back(
        std::make_unique<CharClassPreTokenizer>(&IsBertPunctuation, SplitBehavior::kIsolated));
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "WhitespaceSplit") {
    return std::make_unique<CharClassPreTokenizer>(&IsWhitespace, SplitBehavior::kRemoved);
  }
  if (type == "Punctuation") {
    QS_ASSIGN_OR_RETURN(const SplitBehavior behavior, ParseBehavior(config, path));
    return std::make_unique<CharClassPreTokenizer>(&IsBertPunctuation, behavior);
  }
  if (type == "Sequence") {
    QS_ASSIGN_OR_RETURN(auto steps, ParseSequence<PreTokenizer>(config, "pretokenizers", path,
                                                                &CreatePreTokenizer));
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: unsupported pre_tokenizer type '", type, "' at ", path));
}

}  // namespace quantserve::models::internal
