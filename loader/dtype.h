#pragma once
// The element types a safetensors file can declare, as one table (no LibTorch here; the load
// pipeline maps these to torch::ScalarType on its side).
//
// Names are the header's spelling ("F32", "BF16", "F8_E4M3", ...). Sizes are in bits because
// the OCP microscaling types (F4, F6_*) pack several elements per byte; a tensor of such a
// type must still occupy a whole number of bytes (see loader/FORMAT.md).
//
// Everything here is constant data; all functions are thread-safe.

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace quantserve::loader {

enum class Dtype {
  kBool,
  kU8,
  kI8,
  kU16,
  kI16,
  kU32,
  kI32,
  kU64,
  kI64,
  kF16,
  kBf16,
  kF32,
  kF64,
  kC64,         // complex64: two F32 (real, imaginary)
  kF8E4M3,      // float8_e4m3fn
  kF8E5M2,      // float8_e5m2
  kF8E4M3Fnuz,  // float8_e4m3fnuz
  kF8E5M2Fnuz,  // float8_e5m2fnuz
  kF8E8M0,      // float8_e8m0fnu (OCP MX scale)
  kF6E2M3,      // OCP MX FP6, 6 bits
  kF6E3M2,      // OCP MX FP6, 6 bits
  kF4,          // OCP MX FP4 (e2m1), 4 bits; torch's float4_e2m1fn_x2 holds two per byte
};

// One row of the dtype table.
struct DtypeInfo {
  Dtype dtype;
  // The safetensors header spelling. A C string so it goes straight into absl::StrCat (this
  // abseil's string_view is not std::string_view) as well as into std::string_view.
  const char* name;
  int bits;          // bits per element
  bool is_floating;  // floating point (including complex and the float8/6/4 types)
};

// Every row, in the enum's order.
std::span<const DtypeInfo> AllDtypes();

// The row for `dtype`.
const DtypeInfo& GetDtypeInfo(Dtype dtype);

// The header spelling, e.g. "BF16".
const char* DtypeName(Dtype dtype);

// Bits per element.
int DtypeBits(Dtype dtype);

// Parses a header spelling (case-sensitive, exact). nullopt for anything else.
std::optional<Dtype> ParseDtype(std::string_view name);

// Bytes taken by `numel` elements of `dtype`. nullopt when numel * bits overflows uint64 or is
// not a whole number of bytes (an odd count of 4-bit elements, say).
std::optional<uint64_t> DtypeByteSize(Dtype dtype, uint64_t numel);

}  // namespace quantserve::loader
