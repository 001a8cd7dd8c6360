#include "models/tokenizer/unicode.h"

#include <algorithm>
#include <cstdint>
#include <iterator>

namespace quantserve::models::internal {
namespace {

struct CodepointRange {
  char32_t first;
  char32_t last;
};
struct LowercaseEntry {
  char32_t cp;
  char32_t lower[3];  // zero-padded
};
struct DecompositionEntry {
  char32_t cp;
  uint16_t offset;  // into kDecompositionPool
  uint8_t length;
};
struct CombiningClassRun {
  char32_t first;
  char32_t last;
  uint8_t ccc;
};
struct CompositionEntry {
  char32_t first;
  char32_t second;
  char32_t composite;
};

#include "models/tokenizer/unicode_tables.inc"

// Hangul syllables decompose and compose arithmetically (Unicode ch. 3.12).
constexpr char32_t kHangulSBase = 0xAC00, kHangulLBase = 0x1100, kHangulVBase = 0x1161,
                   kHangulTBase = 0x11A7;
constexpr char32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr char32_t kHangulNCount = kHangulVCount * kHangulTCount;
constexpr char32_t kHangulSCount = kHangulLCount * kHangulNCount;

template <size_t N>
bool InRanges(const CodepointRange (&ranges)[N], char32_t cp) {
  auto it = std::upper_bound(std::begin(ranges), std::end(ranges), cp,
                             [](char32_t c, const CodepointRange& r) { return c < r.first; });
  return it != std::begin(ranges) && cp <= std::prev(it)->last;
}

uint8_t CombiningClass(char32_t cp) {
  if (cp < 0x300) {
    return 0;
  }
  auto it = std::upper_bound(std::begin(kCombiningClass), std::end(kCombiningClass), cp,
                             [](char32_t c, const CombiningClassRun& r) { return c < r.first; });
  if (it == std::begin(kCombiningClass) || cp > std::prev(it)->last) {
    return 0;
  }
  return std::prev(it)->ccc;
}

void AppendDecomposition(char32_t cp, std::u32string* out) {
  if (cp >= kHangulSBase && cp < kHangulSBase + kHangulSCount) {
    const char32_t s = cp - kHangulSBase;
    out->push_back(kHangulLBase + s / kHangulNCount);
    out->push_back(kHangulVBase + (s % kHangulNCount) / kHangulTCount);
    if (s % kHangulTCount != 0) {
      out->push_back(kHangulTBase + s % kHangulTCount);
    }
    return;
  }
  if (cp >= 0xC0) {
    auto it = std::lower_bound(std::begin(kDecomposition), std::end(kDecomposition), cp,
                               [](const DecompositionEntry& e, char32_t c) { return e.cp < c; });
    if (it != std::end(kDecomposition) && it->cp == cp) {
      out->append(kDecompositionPool + it->offset, it->length);
      return;
    }
  }
  out->push_back(cp);
}

// Returns the primary composite of (a, b), or 0 when there is none.
char32_t Compose(char32_t a, char32_t b) {
  if (a >= kHangulLBase && a < kHangulLBase + kHangulLCount && b >= kHangulVBase &&
      b < kHangulVBase + kHangulVCount) {
    return kHangulSBase + ((a - kHangulLBase) * kHangulVCount + (b - kHangulVBase)) * kHangulTCount;
  }
  if (a >= kHangulSBase && a < kHangulSBase + kHangulSCount &&
      (a - kHangulSBase) % kHangulTCount == 0 && b > kHangulTBase &&
      b < kHangulTBase + kHangulTCount) {
    return a + (b - kHangulTBase);
  }
  auto it = std::lower_bound(std::begin(kComposition), std::end(kComposition), std::pair(a, b),
                             [](const CompositionEntry& e, const std::pair<char32_t, char32_t>& k) {
                               return std::pair(e.first, e.second) < k;
                             });
  if (it != std::end(kComposition) && it->first == a && it->second == b) {
    return it->composite;
  }
  return 0;
}

// ASCII text is already in every normalization form.
bool IsAscii(absl::string_view text) {
  for (unsigned char c : text) {
    if (c >= 0x80) {
      return false;
    }
  }
  return true;
}

}  // namespace

size_t Utf8SequenceLength(unsigned char lead) {
  if (lead < 0x80) {
    return 1;
  }
  if (lead >= 0xC2 && lead <= 0xDF) {
    return 2;
  }
  if (lead >= 0xE0 && lead <= 0xEF) {
    return 3;
  }
  if (lead >= 0xF0 && lead <= 0xF4) {
    return 4;
  }
  return 1;
}

std::string SanitizeUtf8(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80) {
      out.push_back(static_cast<char>(lead));
      ++i;
      continue;
    }
    size_t need = Utf8SequenceLength(lead);
    // Allowed range of the second byte excludes overlongs, surrogates and > U+10FFFF.
    unsigned char lo = 0x80, hi = 0xBF;
    if (lead == 0xE0) {
      lo = 0xA0;
    } else if (lead == 0xED) {
      hi = 0x9F;
    } else if (lead == 0xF0) {
      lo = 0x90;
    } else if (lead == 0xF4) {
      hi = 0x8F;
    }
    if (need == 1) {  // stray continuation byte or invalid lead byte
      AppendUtf8(kReplacementChar, &out);
      ++i;
      continue;
    }
    size_t j = i + 1;
    bool ok = true;
    for (size_t k = 1; k < need; ++k, ++j) {
      if (j >= n) {
        ok = false;
        break;
      }
      const auto c = static_cast<unsigned char>(text[j]);
      const unsigned char min = k == 1 ? lo : 0x80;
      const unsigned char max = k == 1 ? hi : 0xBF;
      if (c < min || c > max) {
        ok = false;
        break;
      }
    }
    if (ok) {
      out.append(text.data() + i, need);
    } else {
      AppendUtf8(kReplacementChar, &out);  // one U+FFFD for the maximal valid prefix
    }
    i = j;
  }
  return out;
}

bool IsValidUtf8(absl::string_view text) {
  for (unsigned char c : text) {
    if (c >= 0x80) {
      return SanitizeUtf8(text) == text;
    }
  }
  return true;
}

char32_t NextCodepoint(absl::string_view text, size_t* pos) {
  const auto lead = static_cast<unsigned char>(text[*pos]);
  const size_t len = std::min(Utf8SequenceLength(lead), text.size() - *pos);
  char32_t cp;
  switch (len) {
    case 2:
      cp = lead & 0x1F;
      break;
    case 3:
      cp = lead & 0x0F;
      break;
    case 4:
      cp = lead & 0x07;
      break;
    default:
      ++*pos;
      return lead;
  }
  for (size_t k = 1; k < len; ++k) {
    cp = (cp << 6) | (static_cast<unsigned char>(text[*pos + k]) & 0x3F);
  }
  *pos += len;
  return cp;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::u32string ToUtf32(absl::string_view utf8) {
  std::u32string out;
  out.reserve(utf8.size());
  size_t pos = 0;
  while (pos < utf8.size()) {
    out.push_back(NextCodepoint(utf8, &pos));
  }
  return out;
}

std::string ToUtf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : text) {
    AppendUtf8(cp, &out);
  }
  return out;
}

bool IsBertControl(char32_t cp) { return InRanges(kBertControl, cp); }
bool IsWhitespace(char32_t cp) { return InRanges(kWhitespace, cp); }
bool IsBertPunctuation(char32_t cp) { return InRanges(kBertPunctuation, cp); }
bool IsNonspacingMark(char32_t cp) { return cp >= 0x300 && InRanges(kNonspacingMark, cp); }
bool IsCombiningMark(char32_t cp) { return cp >= 0x300 && InRanges(kCombiningMark, cp); }
bool IsWordChar(char32_t cp) { return InRanges(kWordChar, cp); }
bool IsAsciiDigit(char32_t cp) { return cp >= '0' && cp <= '9'; }

bool IsChineseChar(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

void AppendLowercase(char32_t cp, std::u32string* out) {
  if (cp < 0x80) {
    out->push_back(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
    return;
  }
  auto it = std::lower_bound(std::begin(kLowercase), std::end(kLowercase), cp,
                             [](const LowercaseEntry& e, char32_t c) { return e.cp < c; });
  if (it == std::end(kLowercase) || it->cp != cp) {
    out->push_back(cp);
    return;
  }
  for (char32_t c : it->lower) {
    if (c != 0) {
      out->push_back(c);
    }
  }
}

std::u32string Nfd(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t cp : text) {
    AppendDecomposition(cp, &out);
  }
  // Canonical ordering: stable-sort each run of non-starters by combining class.
  size_t i = 0;
  while (i < out.size()) {
    if (CombiningClass(out[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < out.size() && CombiningClass(out[j]) != 0) {
      ++j;
    }
    if (j - i > 1) {
      std::stable_sort(out.begin() + i, out.begin() + j, [](char32_t a, char32_t b) {
        return CombiningClass(a) < CombiningClass(b);
      });
    }
    i = j;
  }
  return out;
}

std::u32string Nfc(std::u32string_view text) {
  std::u32string d = Nfd(text);
  if (d.empty()) {
    return d;
  }
  size_t starter_pos = 0;
  char32_t starter = d[0];
  int last_class = CombiningClass(starter);
  if (last_class != 0) {
    last_class = 256;  // a leading non-starter blocks every composition after it
  }
  size_t out_pos = 1;
  for (size_t i = 1; i < d.size(); ++i) {
    const char32_t c = d[i];
    const int c_class = CombiningClass(c);
    const char32_t composite = Compose(starter, c);
    if (composite != 0 && (last_class < c_class || last_class == 0)) {
      d[starter_pos] = composite;
      starter = composite;
      continue;
    }
    if (c_class == 0) {
      starter_pos = out_pos;
      starter = c;
    }
    last_class = c_class;
    d[out_pos++] = c;
  }
  d.resize(out_pos);
  return d;
}

std::string NfdUtf8(absl::string_view text) {
  if (IsAscii(text)) {
    return std::string(text);
  }
  return ToUtf8(Nfd(ToUtf32(text)));
}

std::string NfcUtf8(absl::string_view text) {
  if (IsAscii(text)) {
    return std::string(text);
  }
  return ToUtf8(Nfc(ToUtf32(text)));
}

}  // namespace quantserve::models::internal
