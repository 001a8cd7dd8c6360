#include "quant/kernels/fused_ops.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

namespace quantserve::quant::kernels {
namespace {

const std::vector<at::ScalarType> kDtypes = {at::kFloat, at::kBFloat16, at::kHalf};

TEST(FusedOpsTest, RmsNormMatchesTheFormulaBitForBit) {
  at::manual_seed(3);
  for (at::ScalarType dtype : kDtypes) {
    for (const std::vector<int64_t>& shape :
         std::vector<std::vector<int64_t>>{{1, 2048}, {3, 5, 64}, {7, 100}, {130, 256}}) {
      SCOPED_TRACE(testing::Message() << dtype << " " << at::IntArrayRef(shape));
      const at::Tensor x = (at::randn(shape) * 3).to(dtype);
      const at::Tensor w = (at::rand({shape.back()}) + 0.5).to(dtype);
      ASSERT_TRUE(FusedOpsFit(x));
      const at::Tensor got = RmsNorm(x, w, 1e-5);
      const at::Tensor want = RmsNormRef(x, w, 1e-5);
      ASSERT_EQ(got.sizes(), want.sizes());
      ASSERT_EQ(got.scalar_type(), dtype);
      EXPECT_TRUE(at::equal(got, want));
    }
  }
}

TEST(FusedOpsTest, RotaryInPlaceMatchesTheFormulaBitForBit) {
  at::manual_seed(4);
  for (at::ScalarType dtype : kDtypes) {
    for (const std::vector<int64_t>& shape :
         std::vector<std::vector<int64_t>>{{1, 32, 64}, {5, 4, 128}, {9, 3, 10}, {200, 2, 64}}) {
      SCOPED_TRACE(testing::Message() << dtype << " " << at::IntArrayRef(shape));
      const at::Tensor x = at::randn(shape).to(dtype);
      const at::Tensor angles = at::rand({shape[0], shape[2]}) * 100;
      const at::Tensor cos = angles.cos().to(dtype), sin = angles.sin().to(dtype);
      const at::Tensor want = RotaryRef(x, cos, sin);
      at::Tensor got = x.clone();
      ApplyRotaryInPlace(got, cos, sin);
      EXPECT_TRUE(at::equal(got, want));
    }
  }
}

TEST(FusedOpsTest, FitsOnlyContiguousFloatingCpuTensors) {
  EXPECT_TRUE(FusedOpsFit(at::zeros({2, 4}, at::kBFloat16)));
  EXPECT_FALSE(FusedOpsFit(at::zeros({2, 4}, at::kInt)));
  EXPECT_FALSE(FusedOpsFit(at::zeros({4, 2}).t()));
  EXPECT_FALSE(FusedOpsFit(at::Tensor()));
}

}  // namespace
}  // namespace quantserve::quant::kernels
