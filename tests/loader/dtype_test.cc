#include "loader/dtype.h"

#include <set>
#include <string>

#include "gtest/gtest.h"

namespace quantserve::loader {
namespace {

TEST(DtypeTest, NamesRoundTrip) {
  std::set<std::string_view> names;
  for (const DtypeInfo& info : AllDtypes()) {
    EXPECT_TRUE(names.insert(info.name).second) << info.name;
    EXPECT_EQ(ParseDtype(info.name), info.dtype);
    EXPECT_STREQ(DtypeName(info.dtype), info.name);
    EXPECT_EQ(&GetDtypeInfo(info.dtype), &info);
  }
  EXPECT_EQ(names.size(), 22u);
}

TEST(DtypeTest, ElementSizes) {
  EXPECT_EQ(DtypeBits(Dtype::kBool), 8);
  EXPECT_EQ(DtypeBits(Dtype::kBf16), 16);
  EXPECT_EQ(DtypeBits(Dtype::kF32), 32);
  EXPECT_EQ(DtypeBits(Dtype::kC64), 64);
  EXPECT_EQ(DtypeBits(Dtype::kU64), 64);
  EXPECT_EQ(DtypeBits(Dtype::kF8E4M3), 8);
  EXPECT_EQ(DtypeBits(Dtype::kF6E2M3), 6);
  EXPECT_EQ(DtypeBits(Dtype::kF4), 4);
  EXPECT_TRUE(GetDtypeInfo(Dtype::kBf16).is_floating);
  EXPECT_FALSE(GetDtypeInfo(Dtype::kI32).is_floating);
}

TEST(DtypeTest, ParseIsExact) {
  EXPECT_EQ(ParseDtype("F32"), Dtype::kF32);
  EXPECT_EQ(ParseDtype("F8_E4M3"), Dtype::kF8E4M3);
  EXPECT_FALSE(ParseDtype("f32").has_value());
  EXPECT_FALSE(ParseDtype("F32 ").has_value());
  EXPECT_FALSE(ParseDtype("").has_value());
  EXPECT_FALSE(ParseDtype("float32").has_value());
}

TEST(DtypeTest, ByteSize) {
  EXPECT_EQ(DtypeByteSize(Dtype::kF32, 6), 24u);
  EXPECT_EQ(DtypeByteSize(Dtype::kF32, 0), 0u);
  EXPECT_EQ(DtypeByteSize(Dtype::kF4, 12), 6u);
  EXPECT_FALSE(DtypeByteSize(Dtype::kF4, 3).has_value());
  EXPECT_EQ(DtypeByteSize(Dtype::kF6E3M2, 4), 3u);
  EXPECT_FALSE(DtypeByteSize(Dtype::kF6E3M2, 2).has_value());
  EXPECT_FALSE(DtypeByteSize(Dtype::kF64, uint64_t{1} << 61).has_value());
  EXPECT_EQ(DtypeByteSize(Dtype::kU8, UINT64_MAX / 8), UINT64_MAX / 8);
}

}  // namespace
}  // namespace quantserve::loader
