// Arbitrary bytes (invalid UTF-8 included) through real tokenizers: the default model's
// byte-level BPE and, when the fixtures exist, WordPiece (MiniLM). Encode never crashes, ids
// stay in the vocabulary, and decoding them and arbitrary ids never crashes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "models/tokenizer/tokenizer.h"

namespace {

using quantserve::models::Tokenizer;

std::vector<std::unique_ptr<Tokenizer>>& Tokenizers() {
  static std::vector<std::unique_ptr<Tokenizer>> all = [] {
    std::vector<std::unique_ptr<Tokenizer>> out;
    const char* fixtures = std::getenv("QS_FIXTURES_DIR");
    std::vector<std::string> paths = {std::string(QS_SOURCE_DIR) +
                                      "/assets/models/kjv-llama/tokenizer.json"};
    if (fixtures != nullptr) paths.push_back(std::string(fixtures) + "/minilm/tokenizer.json");
    for (const std::string& path : paths) {
      auto t = Tokenizer::FromFile(path);
      if (t.ok()) out.push_back(*std::move(t));
    }
    if (out.empty()) std::abort();  // the default model's tokenizer must load
    return out;
  }();
  return all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto& tokenizer : Tokenizers()) {
    const std::vector<int32_t> ids = tokenizer->Encode(text, /*add_special_tokens=*/true);
    for (int32_t id : ids) {
      if (id < 0 || id >= tokenizer->vocab_size()) std::abort();
    }
    (void)tokenizer->Decode(ids, /*skip_special_tokens=*/true);
    // The same bytes read as ids (any value, negative and out of range included).
    std::vector<int32_t> raw(size / 4);
    for (size_t i = 0; i < raw.size(); ++i) {
      raw[i] = static_cast<int32_t>(data[4 * i] | data[4 * i + 1] << 8 | data[4 * i + 2] << 16 |
                                    static_cast<uint32_t>(data[4 * i + 3]) << 24);
    }
    (void)tokenizer->Decode(raw, /*skip_special_tokens=*/false);
  }
  return 0;
}
