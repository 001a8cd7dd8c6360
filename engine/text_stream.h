#pragma once
// TextStream: turns generated token bytes into UTF-8 text deltas and finds stop strings.
//
// Byte-level BPE tokens are byte strings that may split a character, and a stop string may
// span tokens, so text is released only once it is (a) complete UTF-8 and (b) cannot be the
// beginning of a stop string. Bytes that can never form valid UTF-8 become U+FFFD, as
// transformers' decode(errors="replace") does. No LibTorch; one stream per sequence.

#include <string>
#include <string_view>
#include <vector>

namespace quantserve::engine {

class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stop) : stop_(std::move(stop)) {}

  // Appends a token's bytes; returns text now safe to release (may be empty). After a stop
  // string is found, `stopped()` is true and the returned text ends just before it.
  std::string Push(std::string_view token_bytes);
  // Everything still held (at the end of generation), incomplete UTF-8 replaced.
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stop_;
  std::string bytes_;  // not yet valid UTF-8 (an incomplete trailing character)
  std::string held_;   // valid text that might start a stop string
  bool stopped_ = false;
};

// Splits `bytes` into the longest prefix that is valid UTF-8 (invalid sequences replaced by
// U+FFFD) and leaves in `bytes` only an incomplete trailing sequence.
std::string TakeValidUtf8(std::string& bytes);

}  // namespace quantserve::engine
