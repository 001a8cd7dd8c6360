#include "models/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "models/tokenizer/unicode.h"

namespace quantserve::models::internal {

struct Regex::Code {
  pcre2_code* code;
};

absl::StatusOr<std::unique_ptr<Regex>> Regex::Create(absl::string_view pattern, bool literal) {
  // MULTILINE: Oniguruma (HF's engine) treats ^ and $ as line anchors.
  uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
  if (literal) {
    options = PCRE2_UTF | PCRE2_LITERAL;
  }
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("invalid regex '", pattern, "' at offset ",
                                                   error_offset, ": ",
                                                   reinterpret_cast<const char*>(message)));
  }
  const bool jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return std::unique_ptr<Regex>(new Regex(std::string(pattern), new Code{code}, jit));
}

Regex::Regex(std::string pattern, Code* code, bool jit)
    : pattern_(std::move(pattern)), code_(code), jit_(jit) {}

Regex::~Regex() {
  pcre2_code_free(code_->code);
  delete code_;
}

std::vector<std::pair<size_t, size_t>> Regex::FindAll(absl::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(code_->code, nullptr), &pcre2_match_data_free);
  if (data == nullptr) {
    return matches;
  }
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (start <= text.size()) {
    int rc = pcre2_match(code_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, data.get(),
                         nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH && jit_) {
      // The JIT stack is small; the interpreter keeps its backtracking state on the heap.
      rc = pcre2_match(code_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       data.get(), nullptr);
    }
    if (rc < 0) {
      break;
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (begin > end || end > text.size()) {  // \K in a lookahead can do this; refuse
      break;
    }
    if (begin == end) {
      if (!(have_last && last_end == end)) {
        matches.emplace_back(begin, end);
      }
      have_last = true;
      last_end = end;
      if (end >= text.size()) {
        break;
      }
      start = end + Utf8SequenceLength(static_cast<unsigned char>(text[end]));
      continue;
    }
    matches.emplace_back(begin, end);
    have_last = true;
    last_end = end;
    start = end;
  }
  return matches;
}

}  // namespace quantserve::models::internal
