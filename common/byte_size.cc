#include "common/byte_size.h"

#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"

namespace quantserve::common {

std::optional<int64_t> ParseByteSize(std::string text) {
  static const std::pair<const char*, double> kUnits[] = {
      {"TiB", 1099511627776.0}, {"GiB", 1073741824.0}, {"MiB", 1048576.0}, {"KiB", 1024.0},
      {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1.0}};
  double scale = 1.0;
  for (const auto& [unit, factor] : kUnits) {
    if (absl::EndsWithIgnoreCase(text, unit)) {
      text.resize(text.size() - std::strlen(unit));
      scale = factor;
      break;
    }
  }
  double number = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(text), &number) || number < 0) {
    return std::nullopt;
  }
  return static_cast<int64_t>(number * scale);
}

}  // namespace quantserve::common
