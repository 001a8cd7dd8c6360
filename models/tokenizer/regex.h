#pragma once
// A compiled PCRE2 pattern used to run HF tokenizer.json regexes verbatim (GPT-2, Llama-3 and
// Qwen2 split patterns need \p{L}, \p{N}, lookahead and (?i:...)).
//
// Patterns compile in UTF + UCP mode, so \s, \d, \w and POSIX classes are Unicode-aware like
// the Oniguruma engine HF uses. Immutable after Create(); FindAll() may be called from many
// threads at once (each call owns its match data).

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace quantserve::models::internal {

class Regex {
 public:
  // `literal` matches `pattern` as plain text (HF's Split/Replace `String` patterns).
  static absl::StatusOr<std::unique_ptr<Regex>> Create(absl::string_view pattern, bool literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Byte spans [begin, end) of successive non-overlapping matches in valid UTF-8 `text`. An
  // empty match right where the previous one ended is skipped, as in Rust's iterators. If the
  // engine fails mid-way (resource limits on pathological input) the rest counts as unmatched.
  std::vector<std::pair<size_t, size_t>> FindAll(absl::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  Regex(std::string pattern, Code* code, bool jit);

  std::string pattern_;
  Code* code_;  // owned; pcre2_code is opaque and needs its own free function
  bool jit_;
};

}  // namespace quantserve::models::internal
