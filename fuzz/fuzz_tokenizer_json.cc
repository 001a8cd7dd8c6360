// tokenizer.json of arbitrary bytes: FromJson refuses it with a status, or the tokenizer it
// builds encodes and decodes text without crashing.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "models/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto tokenizer = quantserve::models::Tokenizer::FromJson(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (!tokenizer.ok()) return 0;
  for (const char* text : {"Hello, world! 123", "  \xc3\xa9t\xc3\xa9\n\t\xe4\xbd\xa0\xe5\xa5\xbd", ""}) {
    const auto ids = (*tokenizer)->Encode(text, /*add_special_tokens=*/true);
    (void)(*tokenizer)->Decode(ids, /*skip_special_tokens=*/false);
    (void)(*tokenizer)->Decode(ids, /*skip_special_tokens=*/true);
  }
  return 0;
}
