#include "quant/methods/fbgemm_fp8/fbgemm_fp8_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace quantserve::quant {
namespace {

constexpr float kMinScale = 1.0f / (448.0f * 512.0f);

std::vector<float> Values(const at::Tensor& t) {
  at::Tensor f = t.to(at::kFloat).contiguous();
  return std::vector<float>(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
}

FbgemmFp8Linear MakeLinear(int64_t in, int64_t out, double ub = 1200.0, bool bias = false) {
  return FbgemmFp8Linear(FbgemmFp8LinearOptions{
      .linear = models::LinearOptions{in, out, bias, at::kBFloat16}, .activation_scale_ub = ub});
}

TEST(QuantizeFp8PerRowRefTest, AllZeroRowGetsTheMinimumScaleAndZeroCodes) {
  at::Tensor x = at::zeros({2, 4}, at::kBFloat16);
  x[1] = at::tensor({1.0f, -2.0f, 0.5f, 448.0f}).to(at::kBFloat16);
  auto [q, s] = QuantizeFp8PerRowRef(x, std::nullopt);
  EXPECT_EQ(q.scalar_type(), at::kFloat8_e4m3fn);
  EXPECT_EQ(s.scalar_type(), at::kFloat);
  EXPECT_EQ(s[0].item<float>(), kMinScale);  // max(0 / 448, 1 / (448 * 512))
  EXPECT_EQ(Values(q[0]), (std::vector<float>{0, 0, 0, 0}));
  EXPECT_FALSE(q.to(at::kFloat).isnan().any().item<bool>());
  EXPECT_EQ(s[1].item<float>(), 1.0f);  // 448 / 448
  EXPECT_EQ(Values(q[1]), (std::vector<float>{1, -2, 0.5, 448}));
}

TEST(QuantizeFp8PerRowRefTest, UpperBoundSaturatesTheLargestValues) {
  at::Tensor x = at::tensor({1.0f, -2.0f, 0.5f, 448.0f}).view({1, 4});
  auto [q, s] = QuantizeFp8PerRowRef(x, 1.0f);
  EXPECT_EQ(s[0].item<float>(), 1.0f / 448.0f);
  EXPECT_EQ(Values(q[0]), (std::vector<float>{448, -448, 224, 448}));
}

TEST(QuantizeFp8PerRowRefTest, NonPositiveUpperBoundGivesTheMinimumScaleNotNan) {
  at::Tensor x = at::tensor({1e-6f, -2e-6f, 0.0f, 3e-6f}).view({1, 4});
  for (float ub : {0.0f, -5.0f}) {
    auto [q, s] = QuantizeFp8PerRowRef(x, ub);
    EXPECT_EQ(s[0].item<float>(), kMinScale) << ub;
    EXPECT_FALSE(q.to(at::kFloat).isnan().any().item<bool>()) << ub;
  }
}

TEST(QuantizeFp8PerRowRefTest, RoundsToNearestEvenAndDividesByTheScale) {
  // s = 448 / 448 = 1: 17 and 19 are ties between e4m3 neighbours (16|18, 18|20).
  at::Tensor x = at::tensor({17.0f, 19.0f, -17.0f, 448.0f}).view({1, 4});
  auto [q, s] = QuantizeFp8PerRowRef(x, std::nullopt);
  EXPECT_EQ(Values(q[0]), (std::vector<float>{16, 20, -16, 448}));
  // The scale is m / 448 (IEEE division), not 1 / (448 / m).
  at::Tensor r = at::rand({16, 64}) + 0.1;
  auto [q2, s2] = QuantizeFp8PerRowRef(r, std::nullopt);
  EXPECT_TRUE(at::equal(s2, r.amax(1) / 448.0f));
  EXPECT_TRUE(
      at::equal(q2.to(at::kFloat), (r / s2.unsqueeze(1)).to(at::kFloat8_e4m3fn).to(at::kFloat)));
}

TEST(QuantizeFp8PerRowRefTest, NanElementsAreIgnoredByTheMax) {
  at::Tensor x =
      at::tensor({std::numeric_limits<float>::quiet_NaN(), 2.0f, -1.0f, 0.0f}).view({1, 4});
  auto [q, s] = QuantizeFp8PerRowRef(x, std::nullopt);
  EXPECT_EQ(s[0].item<float>(), 2.0f / 448.0f);
  const auto v = Values(q[0]);
  EXPECT_TRUE(std::isnan(v[0]));  // like the CUDA conversion of a NaN
  EXPECT_EQ(v[1], 448.0f);
  EXPECT_EQ(v[2], -224.0f);
}

TEST(FbgemmFp8LinearTest, StateHasTheSerializedNamesShapesAndDtypes) {
  FbgemmFp8Linear lin = MakeLinear(64, 32, 1200.0, /*bias=*/true);
  std::vector<std::string> names;
  for (const auto& p : lin.NamedParameters()) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "weight_scale", "bias"}));
  EXPECT_EQ(lin.bias.scalar_type(), at::kFloat);  // FbgemmFp8Linear declares it float32
  ASSERT_TRUE(lin.QuantizeWeight(at::randn({32, 64}), LoadTarget{}).ok());
  EXPECT_EQ(lin.weight.scalar_type(), at::kFloat8_e4m3fn);
  EXPECT_EQ(lin.weight.sizes(), (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(lin.weight_scale.scalar_type(), at::kFloat);
  EXPECT_EQ(lin.weight_scale.sizes(), (std::vector<int64_t>{32, 1}));
  lin.bias = at::zeros({32});
  EXPECT_EQ(lin.memory_footprint_bytes(), 32 * 64 + 32 * 4 + 32 * 4);
  EXPECT_EQ(lin.Dequantize().scalar_type(), at::kBFloat16);
  EXPECT_EQ(lin.Dequantize().sizes(), (std::vector<int64_t>{32, 64}));
}

TEST(FbgemmFp8LinearTest, QuantizesTheWeightCastToBfloat16) {
  FbgemmFp8Linear lin = MakeLinear(64, 16);
  at::Tensor w = at::randn({16, 64}) * (1 + 1.0 / 1024);  // not bfloat16-representable
  ASSERT_TRUE(lin.QuantizeWeight(w, LoadTarget{}).ok());
  auto [q, s] = QuantizeFp8PerRowRef(w.to(at::kBFloat16), std::nullopt);
  EXPECT_TRUE(at::equal(lin.weight.view(at::kByte), q.view(at::kByte)));
  EXPECT_TRUE(at::equal(lin.weight_scale, s.unsqueeze(1)));
}

TEST(FbgemmFp8LinearTest, ForwardIsRowwiseFp8GemmWithBothScales) {
  // Weights and activations that e4m3 represents exactly after scaling: the result is the
  // float product, rounded to bfloat16.
  FbgemmFp8Linear lin = MakeLinear(4, 2);
  at::Tensor w = at::tensor({1.0f, 2.0f, 4.0f, 8.0f, -0.5f, 0.25f, 0.0f, 1.0f}).view({2, 4});
  ASSERT_TRUE(lin.QuantizeWeight(w, LoadTarget{}).ok());
  at::Tensor x = at::ones({1, 4}, at::kBFloat16);
  at::Tensor y = lin.Forward(x);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  EXPECT_EQ(Values(y), (std::vector<float>{15.0f, 0.75f}));
  // Float32 activations are taken as bfloat16 and the output comes back in float32.
  at::Tensor y32 = lin.Forward(at::ones({3, 1, 4}));
  EXPECT_EQ(y32.scalar_type(), at::kFloat);
  EXPECT_EQ(y32.sizes(), (std::vector<int64_t>{3, 1, 2}));
  EXPECT_EQ(Values(y32[2]), (std::vector<float>{15.0f, 0.75f}));
}

TEST(FbgemmFp8LinearTest, ActivationScaleUpperBoundClampsEachToken) {
  // ub = 0.5 < absmax 1: the token is quantized as if it were 0.5 everywhere (448 saturates).
  FbgemmFp8Linear lin = MakeLinear(4, 2, /*ub=*/0.5);
  EXPECT_EQ(lin.activation_scale_ub(), 0.5f);
  at::Tensor w = at::tensor({1.0f, 2.0f, 4.0f, 8.0f, -0.5f, 0.25f, 0.0f, 1.0f}).view({2, 4});
  ASSERT_TRUE(lin.QuantizeWeight(w, LoadTarget{}).ok());
  at::Tensor x = at::ones({2, 4}, at::kBFloat16);
  x[1] = at::full({4}, 0.25f, at::kBFloat16);  // below the bound: unaffected
  EXPECT_EQ(Values(lin.Forward(x)), (std::vector<float>{7.5f, 0.375f, 3.75f, 0.1875f}));
}

TEST(FbgemmFp8LinearTest, BiasIsAddedInFloat32) {
  FbgemmFp8Linear lin = MakeLinear(4, 2, 1200.0, /*bias=*/true);
  at::Tensor w = at::tensor({1.0f, 2.0f, 4.0f, 8.0f, -0.5f, 0.25f, 0.0f, 1.0f}).view({2, 4});
  ASSERT_TRUE(lin.QuantizeWeight(w, LoadTarget{}).ok());
  lin.bias = at::tensor({0.5f, -0.25f});
  EXPECT_EQ(Values(lin.Forward(at::ones({1, 4}))), (std::vector<float>{15.5f, 0.5f}));
}

TEST(FbgemmFp8LinearTest, ForwardStaysCloseToTheFloatLinear) {
  FbgemmFp8Linear lin = MakeLinear(256, 64);
  at::Tensor w = at::randn({64, 256}) * 0.05;
  ASSERT_TRUE(lin.QuantizeWeight(w, LoadTarget{}).ok());
  at::Tensor x = at::randn({8, 256});
  at::Tensor y = lin.Forward(x);
  at::Tensor want = at::matmul(x, w.t());
  // e4m3 has a 3-bit mantissa: ~3% relative error per element, averaging out over K = 256.
  EXPECT_LT(((y - want).norm() / want.norm()).item<float>(), 0.05f);
  EXPECT_FALSE(y.isnan().any().item<bool>());
}

}  // namespace
}  // namespace quantserve::quant
