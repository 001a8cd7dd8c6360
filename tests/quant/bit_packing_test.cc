#include "quant/bit_packing.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace quantserve::quant {
namespace {

TEST(BitPackingTest, NibblesGoLowFirstIntoInt32Words) {
  // Row 0: 1..8 -> 0x87654321 (negative as int32); row 1: 15 in the lowest nibble only.
  const at::Tensor values =
      at::tensor({1, 2, 3, 4, 5, 6, 7, 8, 15, 0, 0, 0, 0, 0, 0, 0}, at::kByte).view({2, 8});
  const at::Tensor words = PackNibblesToInt32(values);
  ASSERT_EQ(words.scalar_type(), at::kInt);
  ASSERT_EQ(words.sizes(), at::IntArrayRef({2, 1}));
  EXPECT_EQ(static_cast<uint32_t>(words[0][0].item<int32_t>()), 0x87654321u);
  EXPECT_EQ(words[1][0].item<int32_t>(), 15);
}

TEST(BitPackingTest, ShiftingWordsBackOutGivesTheValues) {
  at::manual_seed(0);
  const at::Tensor values = at::randint(0, 16, {5, 64}, at::kByte);
  const at::Tensor words = PackNibblesToInt32(values).to(at::kLong).bitwise_and(0xFFFFFFFFLL);
  const at::Tensor back = at::bitwise_and(
      at::bitwise_right_shift(words.unsqueeze(-1), at::arange(0, 32, 4, at::kLong)), 15);
  EXPECT_TRUE(at::equal(back.reshape({5, 64}).to(at::kByte), values));
}

}  // namespace
}  // namespace quantserve::quant
