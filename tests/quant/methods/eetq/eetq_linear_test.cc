#include "quant/methods/eetq/eetq_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

namespace quantserve::quant {
namespace {

std::vector<int64_t> Codes(const at::Tensor& q) {
  at::Tensor c = q.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// Q is [in, out]: column n of Q is output feature n.
TEST(EetqQuantizeRefTest, AllZeroRowStores127WithZeroScaleAndDequantizesToZero) {
  at::Tensor w = at::zeros({2, 4});
  w[1] = at::tensor({1.0f, -0.5f, 0.25f, -1.0f});
  auto [q, s] = EetqQuantizeRef(w);
  EXPECT_EQ(q.scalar_type(), at::kChar);
  EXPECT_EQ(q.sizes(), (std::vector<int64_t>{4, 2}));
  // 0 / 0 is NaN; EETQ's std::max(-128, std::min(127, NaN)) keeps 127.
  EXPECT_EQ(Codes(q.select(1, 0)), (std::vector<int64_t>{127, 127, 127, 127}));
  EXPECT_EQ(s[0].item<float>(), 0.0f);
  at::Tensor deq = q.t().to(at::kFloat) * s.to(at::kFloat).unsqueeze(1);
  EXPECT_FALSE(deq.isnan().any().item<bool>());
  EXPECT_EQ(deq[0].abs().sum().item<float>(), 0.0f);
  // absmax/128, not /127: the largest magnitude maps to 128 and clamps to 127 (or -128).
  EXPECT_EQ(Codes(q.select(1, 1)), (std::vector<int64_t>{127, -64, 32, -128}));
  EXPECT_EQ(s[1].item<float>(), 1.0f / 128);
}

TEST(EetqQuantizeRefTest, HalvesRoundAwayFromZero) {
  // s = 32/128 = 0.25: 0.125 / s = 0.5 -> 1 and -0.625 / s = -2.5 -> -3 (at::round: 0, -2).
  auto [q, s] = EetqQuantizeRef(at::tensor({32.0f, 0.125f, -0.625f, 3.0f}).view({1, 4}));
  EXPECT_EQ(Codes(q.select(1, 0)), (std::vector<int64_t>{127, 1, -3, 12}));
}

TEST(EetqQuantizeRefTest, DividesByTheFloat32ScaleNotTheFloat16One) {
  // m/128 = 0.1/128 is not representable in float16; dividing by the fp16 scale would move
  // values near a .5 boundary.
  at::Tensor w = at::rand({64, 256}, at::TensorOptions().dtype(at::kFloat)) - 0.5;
  auto [q, s] = EetqQuantizeRef(w);
  at::Tensor s32 = w.abs().amax(1) * (1.0 / 128);
  at::Tensor x = w / s32.unsqueeze(1);
  at::Tensor t = at::trunc(x);
  at::Tensor want = (t + at::where((x - t).abs() >= 0.5, x.sign(), at::zeros_like(x)))
                        .clamp(-128, 127)
                        .to(at::kChar);
  EXPECT_TRUE(at::equal(q.t(), want));
  EXPECT_TRUE(at::equal(s, s32.to(at::kHalf)));
}

TEST(EetqQuantizeRefTest, NanElementsAreIgnoredByTheMaxAndStore127) {
  at::Tensor w =
      at::tensor({2.0f, std::numeric_limits<float>::quiet_NaN(), -1.0f, 0.0f}).view({1, 4});
  auto [q, s] = EetqQuantizeRef(w);
  EXPECT_EQ(s[0].item<float>(), 2.0f / 128);
  EXPECT_EQ(Codes(q.select(1, 0)), (std::vector<int64_t>{127, 127, -64, 0}));
}

TEST(EetqLinearTest, ShapesOutsideTheCutlassLayoutAreRefused) {
  // 96 % 64 == 32: quant_weights accepts it but its tile interleave overwrites codes.
  for (auto [in, out] : {std::pair<int64_t, int64_t>{48, 64}, {96, 64}, {64, 96}}) {
    EetqLinear lin(models::LinearOptions{in, out, false, at::kFloat});
    absl::Status st = lin.QuantizeWeight(at::randn({out, in}), LoadTarget{});
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << in << "x" << out;
    EXPECT_NE(st.message().find("in_features and out_features divisible by 64"),
              absl::string_view::npos)
        << st;
  }
}

TEST(EetqLinearTest, StateHasEetqNamesShapesAndDtypes) {
  EetqLinear lin(models::LinearOptions{64, 128, true, at::kFloat});
  std::vector<std::string> names;
  for (const auto& p : lin.NamedParameters()) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "weight_scales", "bias"}));
  EXPECT_EQ(lin.bias.scalar_type(), at::kHalf);  // EetqLinear declares the bias float16
  at::Tensor w = at::randn({128, 64});
  ASSERT_TRUE(lin.QuantizeWeight(w, LoadTarget{}).ok());
  EXPECT_EQ(lin.weight.sizes(), (std::vector<int64_t>{64, 128}));
  EXPECT_EQ(lin.weight.scalar_type(), at::kChar);
  EXPECT_EQ(lin.weight_scales.sizes(), (std::vector<int64_t>{128}));
  EXPECT_EQ(lin.weight_scales.scalar_type(), at::kHalf);
  // f16 scales [128] (+ bias once loaded) and the CPU kernel's packed copy (int8 [128, 64] +
  // f32 scales [128]); the serialized int8 [64, 128] is the kernel's codes transposed, rebuilt
  // on demand, not held.
  lin.bias = at::zeros({128}, at::kHalf);
  ASSERT_NE(lin.packed_weight(), nullptr);
  EXPECT_EQ(lin.packed_weight()->bytes(), 64 * 128 + 128 * 4);
  EXPECT_EQ(lin.released_bytes(), 64 * 128);
  EXPECT_TRUE(lin.weight.is_meta());
  EXPECT_EQ(lin.memory_footprint_bytes(), 128 * 2 + 128 * 2 + lin.packed_weight()->bytes());
}

TEST(EetqLinearTest, DequantizeAndForwardUseTheFloat16Scale) {
  EetqLinear lin(models::LinearOptions{64, 64, false, at::kFloat});
  at::Tensor w = at::randn({64, 64});
  ASSERT_TRUE(lin.QuantizeWeight(w, LoadTarget{}).ok());
  at::Tensor deq = lin.Dequantize();
  EXPECT_EQ(deq.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(
      deq, lin.Resident(lin.weight).t().to(at::kFloat) *
               lin.weight_scales.to(at::kFloat).unsqueeze(1)));
  // Half a step, except the absmax element: 128 steps clamp to 127 (one full step).
  EXPECT_LE((deq - w).abs().max().item<float>(),
            (w.abs().amax(1) / 128).max().item<float>() * 1.1f);
  at::Tensor x = at::randn({3, 64});
  // The integer kernel rounds x to int16 per 32 values.
  const at::Tensor want = at::matmul(x, deq.t());
  EXPECT_LE((lin.Forward(x) - want).abs().max().item<double>(),
            kernels::kCpuKernelRelativeError * want.abs().max().item<double>());
}

TEST(EetqLinearTest, QuantizesTheWeightInTheComputeDtype) {
  // transformers casts the checkpoint weight to the model dtype before quant_weights; in
  // float16 the dequantized weight is fp16(q * scale), what the GEMM's half multiply gives.
  EetqLinear lin(models::LinearOptions{64, 64, false, at::kHalf});
  at::Tensor w = at::randn({64, 64});
  ASSERT_TRUE(lin.QuantizeWeight(w, LoadTarget{}).ok());
  auto [q, s] = EetqQuantizeRef(w.to(at::kHalf));
  EXPECT_TRUE(at::equal(lin.Resident(lin.weight), q));
  EXPECT_TRUE(at::equal(lin.weight_scales, s));
  at::Tensor deq = lin.Dequantize();
  EXPECT_EQ(deq.scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal(deq, (q.t().to(at::kFloat) * s.to(at::kFloat).unsqueeze(1)).to(at::kHalf)));
}

// On the CPU the module runs the packed int8 kernel; it matches x @ Dequantize()^T.
TEST(EetqLinearTest, CpuForwardRunsThePackedInt8Kernel) {
  at::manual_seed(7);
  const std::string fast = kernels::CpuKernelLevel() == "scalar" ? "int8_q16_scalar"
                                                                 : "int8_q16_avx2";
  EetqLinear lin(models::LinearOptions{128, 192, true, at::kFloat});
  ASSERT_TRUE(lin.QuantizeWeight(at::randn({192, 128}), LoadTarget{}).ok());
  lin.bias = at::randn({192}).to(at::kHalf);
  EXPECT_EQ(lin.kernel_name(), fast);
  ASSERT_NE(lin.packed_weight(), nullptr);
  // The packed copy (codes + float scales) is counted in the footprint.
  EXPECT_GE(lin.runtime_bytes(), 192 * 128);
  const at::Tensor deq = lin.Dequantize();
  for (int64_t rows : {1, 4, 17}) {
    const at::Tensor x = at::randn({rows, 128});
    const at::Tensor want = at::linear(x, deq, lin.bias.to(at::kFloat));
    const at::Tensor y = lin.Forward(x);
    // x is rounded to int16 per 32 values (kernels/cpu_kernels.h): 2e-4 of the output scale.
    EXPECT_LE((y - want).abs().max().item<float>(), 2e-4f * want.abs().max().item<float>());
  }
}

}  // namespace
}  // namespace quantserve::quant
