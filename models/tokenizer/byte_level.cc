#include "models/tokenizer/byte_level.h"

#include <array>

#include "models/tokenizer/unicode.h"

namespace quantserve::models::internal {
namespace {

struct ByteTables {
  std::array<char32_t, 256> byte_to_cp;
  std::array<std::string, 256> byte_to_utf8;
  std::array<int, 0x144> cp_to_byte;  // -1 where the code point is not in the alphabet
};

const ByteTables& Tables() {
  static const ByteTables* tables = [] {
    auto* t = new ByteTables();
    t->cp_to_byte.fill(-1);
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp = printable(b) ? static_cast<char32_t>(b) : next++;
      t->byte_to_cp[b] = cp;
      AppendUtf8(cp, &t->byte_to_utf8[b]);
      t->cp_to_byte[cp] = b;
    }
    return t;
  }();
  return *tables;
}

}  // namespace

const std::string& ByteToChar(unsigned char byte) { return Tables().byte_to_utf8[byte]; }

std::string BytesToByteLevel(absl::string_view bytes) {
  const ByteTables& t = Tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    out += t.byte_to_utf8[static_cast<unsigned char>(c)];
  }
  return out;
}

std::optional<unsigned char> CharToByte(char32_t cp) {
  const ByteTables& t = Tables();
  if (cp >= t.cp_to_byte.size() || t.cp_to_byte[cp] < 0) {
    return std::nullopt;
  }
  return static_cast<unsigned char>(t.cp_to_byte[cp]);
}

std::optional<std::string> ByteLevelToBytes(absl::string_view token) {
  std::string out;
  out.reserve(token.size());
  size_t pos = 0;
  while (pos < token.size()) {
    std::optional<unsigned char> byte = CharToByte(NextCodepoint(token, &pos));
    if (!byte.has_value()) {
      return std::nullopt;
    }
    out.push_back(static_cast<char>(*byte));
  }
  return out;
}

}  // namespace quantserve::models::internal
