#include "common/json_nesting.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace quantserve::common {

int JsonNesting(const char* text, size_t size) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < size; ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character, whatever it is
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        deepest = std::max(deepest, ++depth);
        break;
      case ']':
      case '}':
        depth = std::max(depth - 1, 0);
        break;
      default:
        break;
    }
  }
  return deepest;
}

absl::Status CheckJsonNesting(absl::string_view what, const char* data, size_t size,
                              int max_depth) {
  const int depth = JsonNesting(data, size);
  if (depth <= max_depth) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": JSON nests ", depth, " levels deep (at most ", max_depth, ")"));
}

}  // namespace quantserve::common
