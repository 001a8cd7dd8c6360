#include "loader/dtype.h"

#include <array>
#include <cstddef>

namespace quantserve::loader {
namespace {

// Indexed by the enum value; the static_asserts below keep the two in step.
constexpr std::array<DtypeInfo, 22> kDtypes = {{
    {Dtype::kBool, "BOOL", 8, false},
    {Dtype::kU8, "U8", 8, false},
    {Dtype::kI8, "I8", 8, false},
    {Dtype::kU16, "U16", 16, false},
    {Dtype::kI16, "I16", 16, false},
    {Dtype::kU32, "U32", 32, false},
    {Dtype::kI32, "I32", 32, false},
    {Dtype::kU64, "U64", 64, false},
    {Dtype::kI64, "I64", 64, false},
    {Dtype::kF16, "F16", 16, true},
    {Dtype::kBf16, "BF16", 16, true},
    {Dtype::kF32, "F32", 32, true},
    {Dtype::kF64, "F64", 64, true},
    {Dtype::kC64, "C64", 64, true},
    {Dtype::kF8E4M3, "F8_E4M3", 8, true},
    {Dtype::kF8E5M2, "F8_E5M2", 8, true},
    {Dtype::kF8E4M3Fnuz, "F8_E4M3FNUZ", 8, true},
    {Dtype::kF8E5M2Fnuz, "F8_E5M2FNUZ", 8, true},
    {Dtype::kF8E8M0, "F8_E8M0", 8, true},
    {Dtype::kF6E2M3, "F6_E2M3", 6, true},
    {Dtype::kF6E3M2, "F6_E3M2", 6, true},
    {Dtype::kF4, "F4", 4, true},
}};

constexpr bool TableMatchesEnum() {
  for (size_t i = 0; i < kDtypes.size(); ++i) {
    if (static_cast<size_t>(kDtypes[i].dtype) != i) {
      return false;
    }
  }
  return static_cast<size_t>(Dtype::kF4) + 1 == kDtypes.size();
}
static_assert(TableMatchesEnum(), "kDtypes rows must follow the Dtype enum order");

}  // namespace

std::span<const DtypeInfo> AllDtypes() { return kDtypes; }

const DtypeInfo& GetDtypeInfo(Dtype dtype) { return kDtypes[static_cast<size_t>(dtype)]; }

const char* DtypeName(Dtype dtype) { return GetDtypeInfo(dtype).name; }

int DtypeBits(Dtype dtype) { return GetDtypeInfo(dtype).bits; }

std::optional<Dtype> ParseDtype(std::string_view name) {
  for (const DtypeInfo& info : kDtypes) {
    if (name == info.name) {
      return info.dtype;
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> DtypeByteSize(Dtype dtype, uint64_t numel) {
  uint64_t bits;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(DtypeBits(dtype)), &bits)) {
    return std::nullopt;
  }
  if (bits % 8 != 0) {
    return std::nullopt;
  }
  return bits / 8;
}

}  // namespace quantserve::loader
