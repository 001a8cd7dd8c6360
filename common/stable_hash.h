#pragma once
// A 64-bit hash that is the same in every process, build and machine (unlike absl::Hash, which
// is seeded per process): for routing keys that must land on the same variant on every
// replica, and for content fingerprints. FNV-1a over the bytes, then splitmix64's finalizer so
// every output bit depends on every input bit. Not cryptographic.

#include <cstdint>

#include "absl/strings/string_view.h"

namespace quantserve::common {

// Hash of `parts` as one sequence with a separator between parts, so ("ab", "c") and
// ("a", "bc") differ.
inline uint64_t StableHash64(std::initializer_list<absl::string_view> parts) {
  uint64_t h = 0xcbf29ce484222325ull;
  bool first = true;
  for (absl::string_view part : parts) {
    if (!first) {
      h ^= 0xff;
      h *= 0x100000001b3ull;
    }
    first = false;
    for (unsigned char c : part) {
      h ^= c;
      h *= 0x100000001b3ull;
    }
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

}  // namespace quantserve::common
