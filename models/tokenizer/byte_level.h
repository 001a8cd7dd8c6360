#pragma once
// GPT-2's reversible byte <-> printable-character mapping used by byte-level BPE: every byte
// becomes one visible code point (printable Latin-1 bytes map to themselves, the other 68 to
// U+0100..U+0143), so a vocabulary of strings can cover arbitrary bytes.

#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace quantserve::models::internal {

// UTF-8 of the character standing for `byte`.
const std::string& ByteToChar(unsigned char byte);
// Each byte of `bytes` replaced by its character.
std::string BytesToByteLevel(absl::string_view bytes);
// The byte a code point stands for, if it is one of the 256 characters.
std::optional<unsigned char> CharToByte(char32_t cp);
// Inverse of BytesToByteLevel for valid UTF-8 `token`; nullopt if any character is not one of
// the 256 (HF then keeps the token's own bytes).
std::optional<std::string> ByteLevelToBytes(absl::string_view token);

}  // namespace quantserve::models::internal
