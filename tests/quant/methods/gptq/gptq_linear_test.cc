// GptqLinear: bit packing (2/3/4/8-bit bitstreams), the v1 zero-point correction, the
// dequantization formula and g_idx validation on small hand-made modules.

#include "quant/methods/gptq/gptq_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace quantserve::quant {
namespace {

TEST(GptqLinearTest, ThreeBitRunSpansThreeWordsLikeGptqModel) {
  // Value i of a run of 32 at bits 3i..3i+2: 10 straddles words 0/1, 21 straddles words 1/2.
  at::Tensor v = at::arange(32, at::kLong).remainder(8).reshape({32, 1});
  at::Tensor p = GptqPackRows(v, 3);
  ASSERT_EQ(p.sizes(), at::IntArrayRef({3, 1}));
  auto word = [&](int i) { return static_cast<uint32_t>(p[i][0].item<int32_t>()); };
  EXPECT_EQ((word(0) >> 27) & 7, 9u % 8);
  EXPECT_EQ(((word(0) >> 30) & 3) | ((word(1) & 1) << 2), 10u % 8);
  EXPECT_EQ((word(1) >> 1) & 7, 11u % 8);
  EXPECT_EQ(((word(1) >> 31) & 1) | ((word(2) & 3) << 1), 21u % 8);
  EXPECT_EQ((word(2) >> 2) & 7, 22u % 8);
  EXPECT_TRUE(at::equal(GptqUnpackRows(p, 3, 32).to(at::kLong), v));
}

TEST(GptqLinearTest, PackUnpackRoundTripsEveryWidth) {
  for (int64_t bits : {2, 3, 4, 8}) {
    at::manual_seed(bits);
    at::Tensor v = at::randint(0, 1 << bits, {64, 5}, at::kLong);
    at::Tensor p = GptqPackRows(v, bits);
    EXPECT_EQ(p.size(0), 64 * bits / 32) << bits;
    EXPECT_TRUE(at::equal(GptqUnpackRows(p, bits, 64).to(at::kLong), v)) << bits;
  }
  // 4-bit little-endian nibbles: row k at shift 4*(k % 8).
  at::Tensor v = at::arange(8, at::kLong).reshape({8, 1});
  EXPECT_EQ(GptqPackRows(v, 4)[0][0].item<int32_t>(), 0x76543210);
}

TEST(GptqLinearTest, V1ZerosAddOnePerFieldWithWordCarries) {
  // sym 4-bit v1 stores 7 in every nibble.
  at::Tensor z = at::full({1, 1}, 0x77777777, at::kInt);
  EXPECT_EQ(GptqV1ToV2Zeros(z, 4, 8)[0][0].item<int32_t>(), static_cast<int32_t>(0x88888888u));
  // An asym v1 export subtracted 0x11111111 from the packed true zeros: adding it back is
  // exact even where a field borrowed (true zero 0 next to 5).
  const uint32_t truth = 0x00000050u;
  at::Tensor stored = at::full({1, 1}, static_cast<int32_t>(truth - 0x11111111u), at::kInt);
  EXPECT_EQ(static_cast<uint32_t>(GptqV1ToV2Zeros(stored, 4, 8)[0][0].item<int32_t>()), truth);
  // 3-bit: field-wise (z + 1) & 7.
  at::Tensor z3 = at::arange(32, at::kLong).remainder(8).reshape({32, 1});
  at::Tensor packed = GptqPackRows(z3, 3).t().contiguous();  // [1, 3] along N
  at::Tensor back = GptqUnpackRows(GptqV1ToV2Zeros(packed, 3, 32).t().contiguous(), 3, 32);
  EXPECT_TRUE(at::equal(back.to(at::kLong), (z3 + 1).remainder(8)));
}

// A packed kernel's name: not a reference path, nor the generic dequantizing fallback that
// PackLut4 takes for shapes no fast kernel fits.
bool IsFastKernel(const std::string& name) {
  return name.find("dequant") == std::string::npos && name.find("_ref") == std::string::npos;
}

// |x| @ |W|ᵀ · 2^-11: what rounding each weight of W to fp16 (as Dequantize does and the
// float32 kernel does not) can change in x @ Wᵀ, plus float32 summation slack.
at::Tensor Fp16RoundingBound(const at::Tensor& x, const at::Tensor& w) {
  return at::matmul(x.abs(), w.to(at::kFloat).abs().t()) * (1.0 / 2048) + 1e-5;
}

// A `bits` module K=64, N=8, group_size 32, asym v2, with given codes/zeros/scales/g_idx.
struct Small {
  std::shared_ptr<GptqLinear> q;
  at::Tensor codes, zeros, scales, g;
};

Small MakeSmall(bool with_g_idx, at::Tensor g, int64_t bits = 4) {
  Small s;
  auto made = GptqLinear::Create({.in_features = 64, .out_features = 8, .bias = false},
                                 {.bits = bits, .group_size = 32, .sym = false, .v1_zeros = false});
  EXPECT_TRUE(made.ok()) << made.status();
  s.q = *made;
  at::manual_seed(7);
  s.codes = at::randint(0, int64_t{1} << bits, {64, 8}, at::kLong);
  s.zeros = at::randint(0, int64_t{1} << bits, {2, 8}, at::kLong);
  s.scales = (at::rand({2, 8}) * 0.1 + 0.01).to(at::kHalf);
  s.g = g;
  LoadTarget t;
  EXPECT_TRUE(
      s.q->LoadSerializedTensor("qweight", "m.qweight", GptqPackRows(s.codes, bits), t).ok());
  EXPECT_TRUE(s.q->LoadSerializedTensor("qzeros", "m.qzeros",
                                        GptqPackRows(s.zeros.t(), bits).t().contiguous(), t)
                  .ok());
  EXPECT_TRUE(s.q->LoadSerializedTensor("scales", "m.scales", s.scales, t).ok());
  if (with_g_idx) {
    EXPECT_TRUE(s.q->LoadSerializedTensor("g_idx", "m.g_idx", g.to(at::kInt), t).ok());
  }
  return s;
}

TEST(GptqLinearTest, DequantizeIsScaleTimesCodeMinusZeroInFp16) {
  at::Tensor g = at::randperm(64, at::kLong).floor_divide(32);  // act-order style
  Small s = MakeSmall(true, g);
  ASSERT_TRUE(s.q->FinishSerializedLoad("m", LoadTarget{}).ok());
  at::Tensor expect = (s.scales.index_select(0, g).to(at::kFloat) *
                       (s.codes - s.zeros.index_select(0, g)).to(at::kFloat))
                          .to(at::kHalf)
                          .t()
                          .to(at::kFloat);
  EXPECT_TRUE(at::equal(s.q->Dequantize(), expect));
}

TEST(GptqLinearTest, ActOrderFourBitRunsThePackedKernelWithAPermutation) {
  // Every group holds exactly group_size rows, in shuffled order: the kernel gathers x.
  at::Tensor g = at::randperm(64, at::kLong).floor_divide(32);
  Small s = MakeSmall(true, g);
  ASSERT_TRUE(s.q->FinishSerializedLoad("m", LoadTarget{}).ok());
  EXPECT_TRUE(IsFastKernel(s.q->kernel_name())) << s.q->kernel_name();
  at::Tensor x = at::randn({3, 64});
  const at::Tensor w = s.q->Dequantize();  // fp16-rounded, from qweight again
  const at::Tensor ref = at::matmul(x, w.t());
  EXPECT_TRUE(((s.q->Forward(x) - ref).abs() <= Fp16RoundingBound(x, w)).all().item<bool>())
      << (s.q->Forward(x) - ref).abs().max();
  // Exactly (q - z)·s in float32 (no fp16 rounding), up to the integer kernel's rounding of
  // x to int16 per 32 values.
  const at::Tensor exact = (s.scales.index_select(0, g).to(at::kFloat) *
                            (s.codes - s.zeros.index_select(0, g)).to(at::kFloat))
                               .t();
  const at::Tensor want = at::matmul(x, exact.t());
  EXPECT_LE((s.q->Forward(x) - want).abs().max().item<double>(),
            kernels::kCpuKernelRelativeError * want.abs().max().item<double>());
  // bfloat16 activations come back in bfloat16.
  EXPECT_EQ(s.q->Forward(x.to(at::kBFloat16)).scalar_type(), at::kBFloat16);
}

TEST(GptqLinearTest, UnevenGroupsAndOtherWidthsKeepTheReferencePath) {
  // Group 0 with 33 rows and group 1 with 31: no contiguous equal groups after sorting.
  at::Tensor g = at::arange(64, at::kLong).floor_divide(32);
  g[40] = 0;
  Small uneven = MakeSmall(true, g);
  ASSERT_TRUE(uneven.q->FinishSerializedLoad("m", LoadTarget{}).ok());
  EXPECT_EQ(uneven.q->kernel_name(), "dequantize_linear_gptq_ref");
  at::Tensor x = at::randn({3, 64});
  EXPECT_TRUE(at::allclose(uneven.q->Forward(x), at::matmul(x, uneven.q->Dequantize().t()), 1e-5,
                           1e-5));
  // 8-bit (2- and 3-bit cannot pack N = 8; they take the same branch).
  Small eight = MakeSmall(false, at::arange(64, at::kLong).floor_divide(32), 8);
  ASSERT_TRUE(eight.q->FinishSerializedLoad("m", LoadTarget{}).ok());
  EXPECT_EQ(eight.q->kernel_name(), "dequantize_linear_gptq_ref");
}

TEST(GptqLinearTest, PackedKernelReplacesTheUnpackedCodes) {
  // Trivial g_idx: no permutation. The int16 codes [K, N] (2 bytes a weight) are dropped;
  // what remains at runtime is the kernel's copy plus the small zeros and g_idx.
  Small s = MakeSmall(false, at::arange(64, at::kLong).floor_divide(32));
  ASSERT_TRUE(s.q->FinishSerializedLoad("m", LoadTarget{}).ok());
  ASSERT_TRUE(IsFastKernel(s.q->kernel_name())) << s.q->kernel_name();
  const int64_t small_state = 2 * 8 * 2 /*zeros int16*/ + 64 * 8 /*g_idx int64*/;
  EXPECT_LT(s.q->runtime_bytes(), 64 * 8 * 2 + small_state);
  EXPECT_GT(s.q->runtime_bytes(), small_state);  // the packed weight is counted
  const at::Tensor expect = (s.scales.index_select(0, s.g).to(at::kFloat) *
                             (s.codes - s.zeros.index_select(0, s.g)).to(at::kFloat))
                                .to(at::kHalf)
                                .t()
                                .to(at::kFloat);
  EXPECT_TRUE(at::equal(s.q->Dequantize(), expect));
}

TEST(GptqLinearTest, MissingGIdxDefaultsToRowOverGroupSize) {
  at::Tensor g = at::arange(64, at::kLong).floor_divide(32);
  Small with = MakeSmall(true, g);
  Small without = MakeSmall(false, g);
  ASSERT_TRUE(with.q->FinishSerializedLoad("m", LoadTarget{}).ok());
  ASSERT_TRUE(without.q->FinishSerializedLoad("m", LoadTarget{}).ok());
  EXPECT_TRUE(at::equal(with.q->Dequantize(), without.q->Dequantize()));
  auto saved = without.q->SerializedTensors();
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(saved->size(), 3u);  // written back without g_idx, as loaded
}

TEST(GptqLinearTest, GIdxOutOfRangeIsDataLossNamingTheTensor) {
  at::Tensor g = at::arange(64, at::kLong).floor_divide(32);
  g[9] = 2;
  Small s = MakeSmall(true, g);
  absl::Status st = s.q->FinishSerializedLoad("m", LoadTarget{});
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_NE(st.message().find("'m.g_idx' has group 2 at row 9, outside [0, 2)"),
            absl::string_view::npos)
      << st;
}

TEST(GptqLinearTest, WrongShapeOrDtypeIsInvalidArgumentWithTheLayout) {
  auto made = GptqLinear::Create({.in_features = 64, .out_features = 8, .bias = false},
                                 {.bits = 4, .group_size = 32});
  ASSERT_TRUE(made.ok());
  absl::Status st = (*made)->LoadSerializedTensor("qweight", "m.qweight",
                                                  at::zeros({7, 8}, at::kInt), LoadTarget{});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(),
            "tensor 'm.qweight' is Int [7, 8] but gptq 4-bit group_size 32 expects Int [8, 8]");
  st = (*made)->LoadSerializedTensor("qzeros", "m.qzeros", at::zeros({2, 1}, at::kLong),
                                     LoadTarget{});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_TRUE((*made)->LoadSerializedTensor("scales", "m.scales", at::zeros({2, 8}),
                                            LoadTarget{}).ok());  // float -> fp16 like HF
}

TEST(GptqLinearTest, UnpackableShapesAreRefused) {
  auto made = GptqLinear::Create({.in_features = 48, .out_features = 64, .bias = false},
                                 {.bits = 3, .group_size = 16});
  EXPECT_EQ(made.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quantserve::quant
