#pragma once
// A guard for JSON that comes from outside the process (requests, checkpoints, config files).
//
// nlohmann::json parses any depth without recursion, but copying, comparing or dumping a value
// recurses once per level: a request nesting objects 100k deep crashes the process on the
// first copy. Every untrusted JSON text is checked with CheckJsonNesting before it is parsed.

#include <cstddef>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace quantserve::common {

// Deeper than any Hugging Face config, quantization_config, tokenizer.json or safetensors
// header (they nest at most ~8 levels), far below what exhausts a thread's stack.
inline constexpr int kMaxJsonNesting = 64;

// The deepest nesting of arrays and objects in the text ("{}" is 1, "[{}]" is 2), ignoring
// brackets inside strings. Linear in the text, no recursion; garbage in gives some count
// (the parser reports the syntax error).
int JsonNesting(const char* data, size_t size);

// INVALID_ARGUMENT "<what>: JSON nests N levels deep (at most 64)" when the text nests deeper
// than `max_depth`.
absl::Status CheckJsonNesting(absl::string_view what, const char* data, size_t size,
                              int max_depth = kMaxJsonNesting);

// The same on any contiguous text (std::string, std::string_view, absl::string_view) or a
// NUL-terminated string.
inline int JsonNesting(const char* text) { return JsonNesting(text, std::strlen(text)); }
template <typename Text>
int JsonNesting(const Text& text) {
  return JsonNesting(text.data(), text.size());
}
template <typename Text>
absl::Status CheckJsonNesting(absl::string_view what, const Text& text,
                              int max_depth = kMaxJsonNesting) {
  return CheckJsonNesting(what, text.data(), text.size(), max_depth);
}

}  // namespace quantserve::common
