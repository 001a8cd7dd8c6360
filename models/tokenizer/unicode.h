#pragma once
// UTF-8 helpers and the Unicode data the tokenizers need: character classes, full lowercase,
// canonical decomposition (NFD) and composition (NFC).
//
// The character data mirrors what HF `tokenizers` sees (its Rust crates pin older Unicode
// versions), so our ids match its ids; gen_unicode_tables.py explains and regenerates it.
// All functions are pure and thread-safe. Functions taking code points never fail; functions
// taking UTF-8 expect valid UTF-8 (see SanitizeUtf8) unless they say otherwise.

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"

namespace quantserve::models::internal {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Returns `text` with every ill-formed UTF-8 subsequence replaced by U+FFFD, one per maximal
// subpart (the policy of Python's `bytes.decode("utf-8", "replace")` and Rust's
// `String::from_utf8_lossy`). Valid input comes back unchanged.
std::string SanitizeUtf8(absl::string_view text);
bool IsValidUtf8(absl::string_view text);

// Decodes the code point starting at text[*pos] and advances *pos past it. `text` must be valid
// UTF-8 and *pos < text.size().
char32_t NextCodepoint(absl::string_view text, size_t* pos);
// Byte length of the UTF-8 sequence whose lead byte is `lead` (1 for stray bytes).
size_t Utf8SequenceLength(unsigned char lead);
void AppendUtf8(char32_t cp, std::string* out);
std::u32string ToUtf32(absl::string_view utf8);
std::string ToUtf8(std::u32string_view text);

// Character classes, as HF's BERT pipeline and added-token matching define them.
bool IsBertControl(char32_t cp);      // removed by BertNormalizer's clean_text
bool IsWhitespace(char32_t cp);       // Unicode White_Space (Rust char::is_whitespace)
bool IsBertPunctuation(char32_t cp);  // ASCII punctuation or Unicode P* (BertPreTokenizer)
bool IsNonspacingMark(char32_t cp);   // general category Mn (BertNormalizer strip_accents)
bool IsCombiningMark(char32_t cp);    // general category M* (the StripAccents normalizer)
bool IsWordChar(char32_t cp);         // regex \w: Alphabetic, M, Nd, Pc, Join_Control
bool IsChineseChar(char32_t cp);      // CJK ideograph blocks BERT pads with spaces
bool IsAsciiDigit(char32_t cp);

// Appends the full (possibly multi-code-point) lowercase mapping of `cp`, without context
// (final sigma is not special-cased, as in HF's Lowercase).
void AppendLowercase(char32_t cp, std::u32string* out);

// Unicode canonical normalization forms.
std::u32string Nfd(std::u32string_view text);
std::u32string Nfc(std::u32string_view text);
// UTF-8 conveniences; Nfc returns early for text that is trivially in NFC.
std::string NfdUtf8(absl::string_view text);
std::string NfcUtf8(absl::string_view text);

}  // namespace quantserve::models::internal
