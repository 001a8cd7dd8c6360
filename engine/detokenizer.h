#pragma once
// Detokenizer: turns a sequence's generated token ids into UTF-8 text, one delta per token,
// for any tokenizer.json decoder.
//
// Byte-level BPE tokens stand for raw bytes, so their bytes are simply concatenated (TextStream
// completes split characters). Other decoders (WordPiece "##", SentencePiece-style "▁" and
// byte fallback) only make sense over a window of tokens, so the delta is the difference of two
// decodes of a short window, the way HF's TextStreamer and vLLM do it: text is released once
// it no longer ends in an incomplete character. Special tokens produce no text. Not
// thread-safe; one per sequence.

#include <cstdint>
#include <string>
#include <vector>

#include "models/tokenizer/tokenizer.h"

namespace quantserve::engine {

class Detokenizer {
 public:
  explicit Detokenizer(const models::Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  // Bytes of new text for `id` (may be empty, or an incomplete UTF-8 sequence for byte-level
  // tokenizers; feed them to a TextStream).
  std::string Push(int32_t id);

 private:
  const models::Tokenizer& tokenizer_;
  std::vector<int32_t> ids_;
  size_t prefix_ = 0;  // first id of the decode window
  size_t read_ = 0;    // ids up to here have been released as text
};

}  // namespace quantserve::engine
