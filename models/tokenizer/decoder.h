#pragma once
// Decoders turn token strings back into text (tokenizer.json "decoder"). Supported "type"s:
// ByteLevel, WordPiece, BPEDecoder, ByteFallback, Fuse, Strip, Replace, Sequence. Others are
// rejected at load with INVALID_ARGUMENT naming the type. Immutable and thread-safe.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "models/tokenizer/json_util.h"

namespace quantserve::models::internal {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // One step of HF's decode_chain: rewrites the list of token strings.
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
  // True if this decoder (or a step of it) maps GPT-2 byte characters back to bytes.
  virtual bool IsByteLevel() const { return false; }
};

absl::StatusOr<std::unique_ptr<Decoder>> CreateDecoder(const Json& config, absl::string_view path);

}  // namespace quantserve::models::internal
