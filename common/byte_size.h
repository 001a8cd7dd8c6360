#pragma once
// accelerate's size strings ("8GiB", "500MB", "1024"), shared by max_memory and SaveModel's
// max_shard_size.

#include <cstdint>
#include <optional>
#include <string>

namespace quantserve::common {

// A byte count, or a number with B/KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB (powers of
// 1024), unit case-insensitive; nullopt when malformed or negative.
std::optional<int64_t> ParseByteSize(std::string text);

}  // namespace quantserve::common
