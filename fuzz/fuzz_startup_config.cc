// A startup config (--config) of arbitrary bytes: ParseStartupConfig refuses it with a status
// or every request it returns passes ValidateLoadRequest; the same for a path through
// CheckRequestPath.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/load_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto parsed = quantserve::server::ParseStartupConfig(text);
  if (parsed.ok()) {
    for (const auto& request : *parsed) {
      if (!quantserve::server::ValidateLoadRequest(request).ok()) std::abort();
    }
  }
  (void)quantserve::server::CheckRequestPath(text);
  (void)quantserve::server::RequestedQuantMethod(text);
  return 0;
}
