#include "engine/detokenizer.h"

#include "absl/types/span.h"

namespace quantserve::engine {
namespace {

bool EndsWithReplacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

}  // namespace

std::string Detokenizer::Push(int32_t id) {
  if (tokenizer_.IsSpecial(id)) return "";
  if (tokenizer_.has_byte_level_decoder()) return tokenizer_.TokenBytes(id);
  ids_.push_back(id);
  absl::Span<const int32_t> all(ids_);
  const std::string before =
      tokenizer_.Decode(all.subspan(prefix_, read_ - prefix_), /*skip_special_tokens=*/true);
  const std::string after = tokenizer_.Decode(all.subspan(prefix_), /*skip_special_tokens=*/true);
  if (after.size() <= before.size() || EndsWithReplacement(after)) return "";
  // The window's earlier text normally stays a prefix; if a decoder rewrote it (e.g. a strip
  // rule), release only what follows the common prefix.
  size_t common = 0;
  while (common < before.size() && before[common] == after[common]) ++common;
  std::string delta = after.substr(common);
  prefix_ = read_;
  read_ = ids_.size();
  return delta;
}

}  // namespace quantserve::engine
