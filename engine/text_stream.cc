#include "engine/text_stream.h"

#include <algorithm>

namespace quantserve::engine {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Length of the UTF-8 sequence starting at `c`, 0 if `c` cannot start one.
int SequenceLength(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Whether `c` may follow lead byte `lead` as the first continuation byte (excludes overlongs,
// surrogates and code points above U+10FFFF).
bool ValidSecond(unsigned char lead, unsigned char c) {
  if (lead == 0xE0) return c >= 0xA0 && c <= 0xBF;
  if (lead == 0xED) return c >= 0x80 && c <= 0x9F;
  if (lead == 0xF0) return c >= 0x90 && c <= 0xBF;
  if (lead == 0xF4) return c >= 0x80 && c <= 0x8F;
  return c >= 0x80 && c <= 0xBF;
}

}  // namespace

std::string TakeValidUtf8(std::string& bytes) {
  std::string out;
  size_t i = 0;
  const size_t n = bytes.size();
  while (i < n) {
    const auto lead = static_cast<unsigned char>(bytes[i]);
    const int len = SequenceLength(lead);
    if (len == 0) {
      out.append(kReplacement);
      i += 1;
      continue;
    }
    if (len == 1) {
      out.push_back(bytes[i]);
      i += 1;
      continue;
    }
    // Check the continuation bytes that are present.
    int have = 1;
    bool bad = false;
    while (have < len && i + have < n) {
      const auto c = static_cast<unsigned char>(bytes[i + have]);
      const bool ok = have == 1 ? ValidSecond(lead, c) : (c >= 0x80 && c <= 0xBF);
      if (!ok) {
        bad = true;
        break;
      }
      ++have;
    }
    if (bad) {
      out.append(kReplacement);  // one replacement for the maximal invalid prefix
      i += have;
      continue;
    }
    if (have < len) break;  // incomplete at the end: wait for more bytes
    out.append(bytes, i, len);
    i += len;
  }
  bytes.erase(0, i);
  return out;
}

std::string TextStream::Push(std::string_view token_bytes) {
  if (stopped_) return "";
  bytes_.append(token_bytes);
  held_.append(TakeValidUtf8(bytes_));
  // Earliest complete stop string wins.
  size_t best = std::string::npos;
  for (const std::string& s : stop_) {
    if (s.empty()) continue;
    size_t pos = held_.find(s);
    if (pos != std::string::npos && pos < best) best = pos;
  }
  if (best != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, best);
    held_.clear();
    bytes_.clear();
    return out;
  }
  // Hold back the longest suffix that is a prefix of some stop string.
  size_t keep = 0;
  for (const std::string& s : stop_) {
    for (size_t k = std::min(s.size() - (s.empty() ? 0 : 1), held_.size()); k > keep; --k) {
      if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string TextStream::Flush() {
  if (stopped_) return "";
  std::string out = std::move(held_);
  held_.clear();
  if (!bytes_.empty()) {
    // Incomplete trailing sequence: one replacement character, like errors="replace".
    out.append(kReplacement);
    bytes_.clear();
  }
  return out;
}

}  // namespace quantserve::engine
