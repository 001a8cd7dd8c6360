// Unit tests of the bitsandbytes kernels and modules on hand-made tensors (no fixtures): edge
// cases (all-zero rows/blocks, sizes that are not a multiple of the block size, odd element
// counts) and the bnb quirks we reproduce on purpose.

#include "quant/methods/bitsandbytes/bitsandbytes_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace quantserve::quant {
namespace {

using bnb::FourBitType;

LoadTarget CpuTarget() { return LoadTarget{}; }

TEST(BnbKernelsTest, PythonFloatRepr) {
  EXPECT_EQ(bnb::PythonFloatRepr(0.0), "0.0");
  EXPECT_EQ(bnb::PythonFloatRepr(-0.0), "-0.0");
  EXPECT_EQ(bnb::PythonFloatRepr(1.0), "1.0");
  EXPECT_EQ(bnb::PythonFloatRepr(0.1), "0.1");
  EXPECT_EQ(bnb::PythonFloatRepr(-2.5), "-2.5");
  EXPECT_EQ(bnb::PythonFloatRepr(123.456), "123.456");
  EXPECT_EQ(bnb::PythonFloatRepr(100.0), "100.0");
  EXPECT_EQ(bnb::PythonFloatRepr(0.0001), "0.0001");
  EXPECT_EQ(bnb::PythonFloatRepr(1e-05), "1e-05");
  EXPECT_EQ(bnb::PythonFloatRepr(1.5e-07), "1.5e-07");
  EXPECT_EQ(bnb::PythonFloatRepr(1e16), "1e+16");
  EXPECT_EQ(bnb::PythonFloatRepr(1234567890123456.0), "1234567890123456.0");
  EXPECT_EQ(bnb::PythonFloatRepr(1.2345e+100), "1.2345e+100");
  // A float32 widened to double, as quant_state's nested_offset is.
  EXPECT_EQ(bnb::PythonFloatRepr(static_cast<double>(0.1f)), "0.10000000149011612");
}

TEST(BnbKernelsTest, FourBitCodes) {
  at::Tensor fp4 = bnb::FourBitCode(FourBitType::kFp4);
  EXPECT_EQ(fp4[3].item<float>(), 1.0f);
  EXPECT_EQ(fp4[11].item<float>(), -1.0f);
  EXPECT_EQ(fp4[1].item<float>(), 0.0625f / 12.0f);
  EXPECT_FALSE(std::signbit(fp4[8].item<float>()));  // Python's int -0 is +0
  EXPECT_TRUE(std::signbit(bnb::FourBitCpuLut(FourBitType::kFp4)[8].item<float>()));
  EXPECT_TRUE(at::equal(bnb::FourBitCpuLut(FourBitType::kFp4), fp4));  // -0 == +0
  at::Tensor nf4 = bnb::FourBitCode(FourBitType::kNf4);
  EXPECT_EQ(nf4[7].item<float>(), 0.0f);
  EXPECT_EQ(nf4[0].item<float>(), -1.0f);
  EXPECT_TRUE(at::equal(nf4, std::get<0>(nf4.sort())));
}

TEST(BnbKernelsTest, DynamicMapIsSortedSigned256) {
  at::Tensor m = bnb::DynamicMap();
  ASSERT_EQ(m.numel(), 256);
  EXPECT_TRUE(at::equal(m, std::get<0>(m.sort())));
  EXPECT_EQ(m[255].item<float>(), 1.0f);
  EXPECT_EQ(m.eq(0).sum().item<int64_t>(), 1);
  EXPECT_LT(m[0].item<float>(), -0.99f);
}

TEST(BnbKernelsTest, Int8VectorwiseQuantRowwise) {
  at::Tensor a = at::tensor({1.0f, -2.0f, 0.5f, 4.0f, 0.f, 0.f}, at::kFloat).view({2, 3});
  auto [codes, stats, cols] = bnb::Int8VectorwiseQuant(a.to(at::kHalf), 0.0);
  EXPECT_FALSE(cols.defined());
  EXPECT_TRUE(at::equal(stats, at::tensor({2.0f, 4.0f})));
  EXPECT_TRUE(at::equal(codes[0], at::tensor({64, -127, 32}, at::kChar)));  // 63.5 -> 64 (RNE)
  EXPECT_EQ(codes[1][0].item<int8_t>(), 127);
}

TEST(BnbKernelsTest, Int8OutliersLeaveTheAbsmaxAndZeroTheirColumns) {
  at::Tensor a = at::tensor({1.0f, 8.0f, -0.5f, 2.0f, 0.25f, 1.0f}, at::kFloat).view({2, 3});
  auto [codes, stats, cols] = bnb::Int8VectorwiseQuant(a.to(at::kHalf), 6.0);
  ASSERT_TRUE(cols.defined());
  EXPECT_TRUE(at::equal(cols, at::tensor({1}, at::kLong)));
  EXPECT_TRUE(at::equal(stats, at::tensor({1.0f, 2.0f})));  // 8.0 left out of row 0
  EXPECT_EQ(codes.select(1, 1).abs().sum().item<int64_t>(), 0);
  // One row: the outlier entry is zeroed before quantization, so its column is 0 as well.
  auto [c1, s1, o1] = bnb::Int8VectorwiseQuant(a.slice(0, 0, 1).to(at::kHalf), 6.0);
  EXPECT_EQ(c1[0][1].item<int8_t>(), 0);
  EXPECT_EQ(s1[0].item<float>(), 1.0f);
  // No outliers: an empty index list (bnb's torch.compile placeholder), not "undefined".
  auto [c2, s2, o2] = bnb::Int8VectorwiseQuant(a.to(at::kHalf), 100.0);
  ASSERT_TRUE(o2.defined());
  EXPECT_EQ(o2.numel(), 0);
}

TEST(BnbKernelsTest, Int8MatmulIsCloseToFloatAndThresholdOnlyMovesOutliers) {
  at::manual_seed(1);
  at::Tensor w = at::randn({16, 32}) * 0.1;
  at::Tensor x = at::randn({5, 32});
  x.index_put_({2, 7}, 9.0f);
  auto [cb, scb, unused] = bnb::Int8VectorwiseQuant(w.to(at::kHalf), 0.0);
  at::Tensor exact = at::linear(x, w);
  at::Tensor y0 = bnb::Int8MixedMatmulRef(x, cb, scb, at::Tensor(), 0.0);
  at::Tensor y6 = bnb::Int8MixedMatmulRef(x, cb, scb, at::Tensor(), 6.0);
  EXPECT_EQ(y6.scalar_type(), at::kFloat);
  EXPECT_LT((y6 - exact).abs().max().item<float>(), 0.05f);
  // The outlier makes row 2's absmax 9 without the decomposition: larger error there.
  EXPECT_LT((y6 - exact).abs().max().item<float>(), (y0 - exact).abs().max().item<float>());
  // A bias is added in the input dtype; 3-D inputs keep their leading dims.
  at::Tensor bias = at::ones({16}, at::kDouble);
  at::Tensor y3 = bnb::Int8MixedMatmulRef(x.unsqueeze(0), cb, scb, bias, 6.0);
  EXPECT_EQ(y3.sizes(), (std::vector<int64_t>{1, 5, 16}));
  EXPECT_TRUE(at::allclose(y3[0], y6 + 1, 0, 1e-6));
}

TEST(BnbKernelsTest, Quantize4bitPacksHighNibbleFirst) {
  // 64 values: block absmax 1. FP4: 1.0 -> code 3, -1.0 -> 11, 0.5 -> 5, 0 -> 0.
  std::vector<float> v(64, 0.f);
  v[0] = 1.0f;
  v[1] = -1.0f;
  v[2] = 0.5f;
  auto [packed, absmax] = bnb::Quantize4bit(at::tensor(v).view({2, 32}), 64, FourBitType::kFp4);
  EXPECT_EQ(packed.sizes(), (std::vector<int64_t>{32, 1}));
  EXPECT_EQ(packed[0][0].item<uint8_t>(), 0x3B);
  EXPECT_EQ(packed[1][0].item<uint8_t>(), 0x50);
  EXPECT_EQ(absmax.item<float>(), 1.0f);
}

TEST(BnbKernelsTest, Fp4SmallPositiveValuesGetTheMinusZeroCode) {
  // bnb's default backend bucketizes against argsort(code) midpoints; argsort puts +0 (code
  // 0) before -0 (code 8), so (0, 0.0026] lands on code 8 and (-0.0026, 0] on code 0.
  std::vector<float> v(64, 0.f);
  v[0] = 1.0f;
  v[2] = 0.001f;
  v[3] = -0.001f;
  auto [packed, absmax] = bnb::Quantize4bit(at::tensor(v), 64, FourBitType::kFp4);
  EXPECT_EQ(packed[1][0].item<uint8_t>(), 0x80);
  at::Tensor back = bnb::Dequantize4bit(packed, absmax, bnb::FourBitCpuLut(FourBitType::kFp4), 64,
                                        {64}, at::kFloat);
  EXPECT_EQ(back[2].item<float>(), 0.0f);
  EXPECT_TRUE(std::signbit(back[2].item<float>()));
}

TEST(BnbKernelsTest, AllZeroBlocksStayZero) {
  at::Tensor w = at::zeros({2, 64});
  w[1].fill_(0.5f);
  for (FourBitType t : {FourBitType::kFp4, FourBitType::kNf4}) {
    auto [packed, absmax] = bnb::Quantize4bit(w, 64, t);
    EXPECT_EQ(absmax[0].item<float>(), 0.0f);  // stored unclamped for full blocks
    at::Tensor back =
        bnb::Dequantize4bit(packed, absmax, bnb::FourBitCode(t), 64, {2, 64}, at::kFloat);
    EXPECT_TRUE(at::equal(back, w));
  }
  // NF4's zero is code 7.
  auto [packed, absmax] = bnb::Quantize4bit(w, 64, FourBitType::kNf4);
  EXPECT_EQ(packed[0][0].item<uint8_t>(), 0x77);
  // The 8-bit blockwise quantizer: an all-zero block gives absmax 0 and code 0.
  auto [q, am] = bnb::QuantizeBlockwiseCpu(at::zeros({300}), bnb::DynamicMap(), 256);
  EXPECT_EQ(am.numel(), 2);
  EXPECT_EQ(am.abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(q.to(at::kInt).sum().item<int64_t>(), 0);
}

TEST(BnbKernelsTest, PartialLastBlockAndOddElementCount) {
  // 3 x 5 = 15 elements, blocksize 64: one partial block and a padded final nibble.
  at::manual_seed(2);
  at::Tensor w = at::randn({3, 5});
  auto [packed, absmax] = bnb::Quantize4bit(w, 64, FourBitType::kNf4);
  EXPECT_EQ(packed.sizes(), (std::vector<int64_t>{8, 1}));
  EXPECT_EQ(absmax.numel(), 1);
  EXPECT_EQ(absmax.item<float>(), w.abs().max().item<float>());
  EXPECT_EQ(packed[7][0].item<uint8_t>() & 0xF, 7);  // padding quantizes 0
  at::Tensor back = bnb::Dequantize4bit(packed, absmax, bnb::FourBitCode(FourBitType::kNf4), 64,
                                        {3, 5}, at::kFloat);
  EXPECT_EQ(back.sizes(), w.sizes());
  EXPECT_LT((back - w).abs().max().item<float>(), 0.2f * absmax.item<float>());
  // 150 elements: two full blocks and one of 22 with its own absmax.
  at::Tensor w2 = at::randn({3, 50});
  auto [p2, a2] = bnb::Quantize4bit(w2, 64, FourBitType::kFp4);
  EXPECT_EQ(a2.numel(), 3);
  EXPECT_EQ(a2[2].item<float>(), w2.reshape(-1).slice(0, 128).abs().max().item<float>());
}

TEST(BnbKernelsTest, BlockwiseLutQuantizerHitsExactCodes) {
  at::Tensor code = bnb::DynamicMap();
  // A block whose values are code entries times its absmax maps back onto those entries
  // where the map is coarser than the 65536-bin LUT (|code| > 0.1: not near 0, where bnb's
  // LUT cannot tell the 1e-6-spaced entries apart).
  at::Tensor idx = at::tensor({0, 10, 60, 200, 255}, at::kLong);
  at::Tensor vals = code.index_select(0, idx) * 3.0;
  auto [q, am] = bnb::QuantizeBlockwiseCpu(vals, code, 256);
  EXPECT_EQ(am.item<float>(), 3.0f);
  EXPECT_TRUE(at::equal(q.to(at::kLong), idx));
  at::Tensor back = bnb::DequantizeBlockwise(q, am, code, 256);
  EXPECT_TRUE(at::allclose(back, vals, 0, 1e-6));
}

TEST(BnbLinear4bitTest, StorageThatDoesNotDivideThePackedBytesIsAnError) {
  models::LinearOptions o{.in_features = 6, .out_features = 1};
  BnbLinear4bit m(o, {.quant_type = FourBitType::kNf4, .quant_storage = at::kFloat});
  absl::Status s = m.QuantizeWeight(at::randn({1, 6}), CpuTarget());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("float32"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("= 3"), absl::string_view::npos) << s;
}

TEST(BnbLinear4bitTest, RoundTripsOddShapesAndStorageViews) {
  at::manual_seed(3);
  models::LinearOptions o{.in_features = 7, .out_features = 9, .bias = false};
  at::Tensor w = at::randn({9, 7});
  BnbLinear4bit plain(o, {.quant_type = FourBitType::kFp4});
  ASSERT_TRUE(plain.QuantizeWeight(w, CpuTarget()).ok());
  EXPECT_EQ(plain.weight.sizes(), (std::vector<int64_t>{32, 1}));
  // 63 elements, double quant: one 64-block, nested absmax of one 256-block.
  BnbLinear4bit dq(
      o, {.quant_type = FourBitType::kFp4, .double_quant = true, .quant_storage = at::kBFloat16});
  ASSERT_TRUE(dq.QuantizeWeight(w, CpuTarget()).ok());
  EXPECT_EQ(dq.weight.scalar_type(), at::kBFloat16);
  EXPECT_EQ(dq.weight.sizes(), (std::vector<int64_t>{16, 1}));
  EXPECT_EQ(dq.absmax.scalar_type(), at::kByte);
  EXPECT_TRUE(at::equal(dq.weight.view(at::kByte).reshape(-1), plain.weight.reshape(-1)));
  // One block: offset == absmax, so the centred absmax is 0 and code 0 + offset restores it.
  EXPECT_EQ(dq.Dequantize().sub(plain.Dequantize()).abs().max().item<float>(), 0.0f);
  at::Tensor x = at::randn({2, 7});
  EXPECT_TRUE(at::allclose(plain.Forward(x), at::linear(x, plain.Dequantize()), 0, 0));
  const std::string json(reinterpret_cast<const char*>(dq.quant_state.data_ptr<uint8_t>()),
                         dq.quant_state.numel());
  EXPECT_NE(json.find(R"("shape": [9, 7], "nested_blocksize": 256)"), std::string::npos) << json;
}

TEST(BnbLinear4bitTest, ComputeDtypeRoundsTheActivationsAndTheWeight) {
  at::manual_seed(4);
  // in_features % blocksize != 0: blocks straddle rows, so no packed kernel (the bnb path).
  models::LinearOptions o{.in_features = 96, .out_features = 8, .bias = true};
  BnbLinear4bit m(o, {.quant_type = FourBitType::kNf4, .compute_dtype = at::kBFloat16});
  ASSERT_TRUE(m.QuantizeWeight(at::randn({8, 96}), CpuTarget()).ok());
  m.bias = at::randn({8});
  at::Tensor x = at::randn({3, 96});
  at::Tensor y = m.Forward(x);
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  at::Tensor want =
      at::linear(x.to(at::kBFloat16), m.Dequantize().to(at::kBFloat16), m.bias.to(at::kBFloat16))
          .to(at::kFloat);
  EXPECT_TRUE(at::equal(y, want));
  EXPECT_EQ(m.kernel_name(), "gemm_w4a16_nf4_ref");
}

// Blocks that line up with rows: the packed lut4 kernel (NF4/FP4 table, block absmax as the
// group scale, double quant undone at pack) against x @ Dequantize()^T.
TEST(BnbLinear4bitTest, RowAlignedBlocksRunThePackedKernel) {
  at::manual_seed(5);
  for (FourBitType type : {FourBitType::kNf4, FourBitType::kFp4}) {
    for (bool dq : {false, true}) {
      for (int64_t block : {64, 128}) {
        SCOPED_TRACE(::testing::Message() << "nf4=" << (type == FourBitType::kNf4) << " dq=" << dq
                                        << " block=" << block);
        models::LinearOptions o{.in_features = 256, .out_features = 40, .bias = true};
        BnbLinear4bit m(o, {.quant_type = type, .blocksize = block, .double_quant = dq});
        ASSERT_TRUE(m.QuantizeWeight(at::randn({40, 256}), CpuTarget()).ok());
        m.bias = at::randn({40});
        EXPECT_EQ(m.kernel_name(), kernels::CpuLut4KernelName(/*affine=*/false, block));
        ASSERT_NE(m.packed_weight(), nullptr);
        EXPECT_GE(m.runtime_bytes(), m.packed_weight()->bytes());
        for (int64_t rows : {1, 3, 9}) {
          const at::Tensor x = at::randn({rows, 256});
          const at::Tensor want = at::linear(x, m.Dequantize(), m.bias);
          const at::Tensor y = m.Forward(x);
          EXPECT_EQ(y.scalar_type(), at::kFloat);
          // x rounded to int16 per 32 values and the table to int16 (kernels/cpu_kernels.h):
          // 2e-4 of the output scale.
          EXPECT_LE((y - want).abs().max().item<float>(),
                    2e-4f * want.abs().max().item<float>());
        }
      }
    }
  }
  // bf16 compute dtype: x rounded to bf16 as bnb does, float32 accumulation, bf16 output.
  models::LinearOptions o{.in_features = 128, .out_features = 16, .bias = false};
  BnbLinear4bit m(o, {.quant_type = FourBitType::kNf4, .compute_dtype = at::kBFloat16});
  ASSERT_TRUE(m.QuantizeWeight(at::randn({16, 128}), CpuTarget()).ok());
  EXPECT_EQ(m.kernel_name(), kernels::CpuLut4KernelName(/*affine=*/false, 64));
  const at::Tensor x = at::randn({2, 128});
  const at::Tensor want =
      at::linear(x.to(at::kBFloat16).to(at::kFloat), m.Dequantize().to(at::kFloat));
  const at::Tensor y = m.Forward(x);
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  // One bf16 rounding of the output (2^-8 relative) plus the q16 rounding (2e-4 of the scale).
  EXPECT_TRUE(at::allclose(y, want, 1.0 / 256, 2e-4 * want.abs().max().item<double>()));
}

TEST(BnbLinear8bitLtTest, ZeroRowsAndFp16Weights) {
  models::LinearOptions o{.in_features = 4, .out_features = 2};
  at::Tensor w = at::tensor({0.1f, -0.2f, 0.3f, 0.4f, 0.f, 0.f, 0.f, 0.f}).view({2, 4});
  BnbLinear8bitLt m(o, 6.0, /*has_fp16_weights=*/false);
  ASSERT_TRUE(m.QuantizeWeight(w, CpuTarget()).ok());
  EXPECT_EQ(m.weight.scalar_type(), at::kChar);
  EXPECT_EQ(m.SCB.sizes(), (std::vector<int64_t>{2}));
  EXPECT_EQ(m.weight_format.dim(), 0);
  EXPECT_EQ(m.weight_format.item<uint8_t>(), 0);
  // SCB is the fp16-rounded absmax; an all-zero row keeps SCB 0 and dequantizes to 0.
  EXPECT_EQ(m.SCB[0].item<float>(),
            static_cast<float>(at::tensor(0.4f).to(at::kHalf).item<at::Half>()));
  EXPECT_EQ(m.SCB[1].item<float>(), 0.0f);
  EXPECT_EQ(m.Dequantize()[1].abs().sum().item<float>(), 0.0f);
  BnbLinear8bitLt f(o, 6.0, /*has_fp16_weights=*/true);
  ASSERT_TRUE(f.QuantizeWeight(w, CpuTarget()).ok());
  EXPECT_TRUE(at::equal(f.weight, w));
  at::Tensor x = at::randn({3, 4});
  EXPECT_TRUE(at::equal(f.Forward(x), m.Forward(x)));
  EXPECT_EQ(f.NamedParameters().size(), 1u);  // no SCB / weight_format without int8 state
}

}  // namespace
}  // namespace quantserve::quant
