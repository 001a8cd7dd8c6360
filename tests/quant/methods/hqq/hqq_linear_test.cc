// HqqLinear and hqq's bit packing on small hand-made weights: layouts, edge cases and errors.
// The bit-exact comparison with hqq itself is hqq_quantizer_test.cc.

#include "quant/methods/hqq/hqq_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "quant/methods/hqq/hqq_bitpack.h"

namespace quantserve::quant {
namespace {

models::LinearOptions Options(int64_t out, int64_t in, bool bias = false) {
  models::LinearOptions o;
  o.out_features = out;
  o.in_features = in;
  o.bias = bias;
  return o;
}

HqqWeightQuantParams Params(double nbits, std::optional<int64_t> group, int64_t axis = 1) {
  HqqWeightQuantParams p;
  p.nbits = nbits;
  p.group_size = group;
  p.axis = axis;
  p.round_zero = nbits == 4;
  return p;
}

std::shared_ptr<HqqLinear> Quantized(const at::Tensor& w, const HqqWeightQuantParams& p,
                                     bool bias = false) {
  auto linear = HqqLinear::Create(Options(w.size(0), w.size(1), bias), p);
  EXPECT_TRUE(linear.ok()) << linear.status();
  if (!linear.ok()) return nullptr;
  EXPECT_TRUE((*linear)->QuantizeWeight(w, LoadTarget()).ok());
  return *linear;
}

TEST(HqqBitpackTest, TableFollowsBitToPacking) {
  EXPECT_STREQ(HqqPackingForBits(8).name, "8bit_u8");
  EXPECT_STREQ(HqqPackingForBits(6).name, "8bit_u8");
  EXPECT_STREQ(HqqPackingForBits(5).name, "8bit_u8");
  EXPECT_STREQ(HqqPackingForBits(4).name, "4bit_u8");
  EXPECT_STREQ(HqqPackingForBits(3).name, "3bit_32");
  EXPECT_STREQ(HqqPackingForBits(2).name, "2bit_u8");
  EXPECT_STREQ(HqqPackingForBits(1.58).name, "2bit_u8");
  EXPECT_STREQ(HqqPackingForBits(1).name, "1bit_u8");
}

TEST(HqqBitpackTest, FourBitIsPlanarHighNibbleFirst) {
  // Rows [0, 1) go to the high nibble, rows [1, 2) to the low one.
  at::Tensor codes = at::tensor({1.0f, 2.0f, 15.0f, 0.0f}).reshape({2, 2});
  at::Tensor packed = HqqPack(codes, HqqPackingForBits(4));
  EXPECT_TRUE(at::equal(packed, at::tensor({0x1F, 0x20}, at::kByte).reshape({1, 2})));
}

TEST(HqqBitpackTest, ThreeBitPadsRowsToTenPerInt32) {
  at::Tensor codes = at::tensor({7.0f, 1.0f, 5.0f}).reshape({3, 1});
  at::Tensor packed = HqqPack(codes, HqqPackingForBits(3));
  ASSERT_EQ(packed.scalar_type(), at::kInt);
  ASSERT_EQ(packed.sizes(), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(packed.item<int32_t>(), (7 << 27) | (1 << 24) | (5 << 21));
  at::Tensor back = HqqUnpack(packed, HqqPackingForBits(3), at::kFloat);
  ASSERT_EQ(back.size(0), 10);  // padded rows come back; the caller trims
  EXPECT_TRUE(at::equal(back.slice(0, 0, 3), codes));
  EXPECT_EQ(back.slice(0, 3).abs().sum().item<float>(), 0.0f);
}

TEST(HqqBitpackTest, RoundTripEveryFormat) {
  for (double bits : {8.0, 4.0, 3.0, 2.0, 1.0}) {
    const HqqPacking& p = HqqPackingForBits(bits);
    const int64_t rows = 40;  // a multiple of every per_word but 3-bit's 10 * 4
    at::Tensor codes =
        at::randint(0, int64_t{1} << p.bits, {rows, 8}, at::TensorOptions().dtype(at::kFloat));
    at::Tensor packed = HqqPack(codes, p);
    EXPECT_EQ(packed.size(0), HqqPackedRows(p, rows)) << p.name;
    EXPECT_EQ(packed.scalar_type(), p.storage) << p.name;
    EXPECT_TRUE(at::equal(HqqUnpack(packed, p, at::kFloat).slice(0, 0, rows), codes)) << p.name;
  }
  EXPECT_EQ(HqqPackedRows(HqqPackingForBits(2), 6), -1);
  EXPECT_EQ(HqqPackedRows(HqqPackingForBits(3), 11), 2);
}

TEST(HqqLinearTest, LayoutShapesPerAxis) {
  auto l1 = HqqLayout::Create(256, 768, Params(4, 64, 1), at::kFloat);
  ASSERT_TRUE(l1.ok());
  EXPECT_EQ(l1->w_q_shape, (std::vector<int64_t>{1536, 64}));
  EXPECT_EQ(l1->scale_shape, (std::vector<int64_t>{3072, 1}));
  auto l0 = HqqLayout::Create(256, 768, Params(3, 64, 0), at::kFloat);
  ASSERT_TRUE(l0.ok());
  EXPECT_EQ(l0->w_q_shape, (std::vector<int64_t>{7, 3072}));  // ceil(64 / 10) int32 rows
  EXPECT_EQ(l0->scale_shape, (std::vector<int64_t>{1, 3072}));
  // group_size None: one group per output row (axis 1) / input column (axis 0).
  auto per_row = HqqLayout::Create(256, 768, Params(4, std::nullopt, 1), at::kFloat);
  EXPECT_EQ(per_row->group_size, 768);
  EXPECT_EQ(per_row->scale_shape, (std::vector<int64_t>{256, 1}));
  auto per_col = HqqLayout::Create(256, 768, Params(4, std::nullopt, 0), at::kFloat);
  EXPECT_EQ(per_col->group_size, 256);
  EXPECT_EQ(per_col->scale_shape, (std::vector<int64_t>{1, 768}));
  // view_as_float: uint8 [1536, 64] viewed as float32.
  HqqWeightQuantParams v = Params(4, 64);
  v.view_as_float = true;
  EXPECT_EQ(HqqLayout::Create(256, 768, v, at::kFloat)->w_q_shape,
            (std::vector<int64_t>{1536, 16}));
  EXPECT_EQ(HqqLayout::Create(256, 768, v, at::kBFloat16)->w_q_shape,
            (std::vector<int64_t>{1536, 32}));
}

TEST(HqqLinearTest, GroupSizeNotDividingTheWeightIsInvalid) {
  auto l = HqqLinear::Create(Options(10, 12), Params(4, 64));
  EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(l.status().message(),
            "hqq group_size 64 does not divide the [10, 12] weight (120 elements); hqq asserts "
            "numel % group_size == 0");
}

TEST(HqqLinearTest, RowsThatHqqWouldMisPackAreInvalid) {
  // [3, 8] in groups of 8: 3 grouped rows, but 4-bit packs 2 rows per byte.
  auto l = HqqLinear::Create(Options(3, 8), Params(4, 8));
  EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(l.status().message(),
            "hqq 4bit_u8 packing needs the grouped weight's rows (N*K/group_size = 3) to be a "
            "multiple of 2; hqq would mis-pack this weight");
  // 3-bit pads instead, 8-bit needs nothing.
  EXPECT_TRUE(HqqLinear::Create(Options(3, 8), Params(3, 8)).ok());
  EXPECT_TRUE(HqqLinear::Create(Options(3, 8), Params(8, 8)).ok());
}

TEST(HqqLinearTest, ViewAsFloatNeedsWholeElements) {
  HqqWeightQuantParams p = Params(8, 8, 0);
  p.view_as_float = true;
  // axis 0: W_q is [8, R = 2] uint8, 2 bytes per row, not a float32.
  auto l = HqqLinear::Create(Options(2, 8), p);
  EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(l.status().message().find("cannot view 2 torch.uint8 codes per row as torch.float32"),
            std::string::npos)
      << l.status();
}

TEST(HqqLinearTest, AllZeroWeightDequantizesToZero) {
  // max == min: the inverse scale falls back to 1 and the zero point to 0; the shrink operator
  // sees |0|^(p-1) = inf and still returns 0.
  for (double bits : {4.0, 3.0, 2.0, 1.0}) {
    auto l = Quantized(at::zeros({16, 32}), Params(bits, 16));
    ASSERT_NE(l, nullptr);
    EXPECT_TRUE(at::equal(l->scale, at::ones_like(l->scale))) << bits;
    EXPECT_EQ(l->Dequantize().abs().max().item<float>(), 0.0f) << bits;
  }
}

TEST(HqqLinearTest, ZeroGroupAmongOthersStaysZeroAndFinite) {
  at::manual_seed(0);
  at::Tensor w = at::randn({8, 64});
  w.slice(0, 2, 3).zero_();  // row 2 = groups 4 and 5 of 32
  auto l = Quantized(w, Params(4, 32));
  ASSERT_NE(l, nullptr);
  at::Tensor d = l->Dequantize();
  EXPECT_TRUE(at::isfinite(d).all().item<bool>());
  EXPECT_TRUE(at::isfinite(l->zero).all().item<bool>());
  EXPECT_EQ(d.slice(0, 2, 3).abs().max().item<float>(), 0.0f);
  // Elsewhere within half a step of the weight (4-bit, 15 steps over each group's range).
  at::Tensor step = (w.reshape({-1, 32}).amax(1) - w.reshape({-1, 32}).amin(1)) / 15;
  EXPECT_TRUE(((d - w).abs().reshape({-1, 32}).amax(1) <= step * 1.01).all().item<bool>());
}

TEST(HqqLinearTest, ConstantGroupIsExactWithoutRoundZero) {
  // A constant group c: inverse scale 1, zero -c, codes 0, so (0 - -c) * 1 == c.
  at::Tensor w = at::full({4, 16}, 0.375f);
  HqqWeightQuantParams p = Params(2, 16);
  p.optimize = false;
  auto l = Quantized(w, p);
  ASSERT_NE(l, nullptr);
  EXPECT_TRUE(at::equal(l->Dequantize(), w));
}

TEST(HqqLinearTest, StateDtypesAndMetadata) {
  at::manual_seed(1);
  HqqWeightQuantParams p = Params(1.58, 16, 0);
  p.nbits_is_float = true;
  auto l = Quantized(at::randn({32, 16}), p, /*bias=*/true);
  ASSERT_NE(l, nullptr);
  std::map<std::string, at::Tensor> state;
  for (const auto& n : l->NamedParameters()) state[n.name] = *n.slot.tensor;
  EXPECT_EQ(state.at("W_q").scalar_type(), at::kByte);
  EXPECT_EQ(state.at("W_q").sizes(), (std::vector<int64_t>{4, 32}));  // 2-bit along G = 16
  EXPECT_EQ(state.at("scale").sizes(), (std::vector<int64_t>{1, 32}));
  EXPECT_EQ(state.at("nbits").scalar_type(), at::kFloat);  // 1.58 stays a Python float
  EXPECT_FLOAT_EQ(state.at("nbits").item<float>(), 1.58f);
  EXPECT_EQ(state.at("group_size").item<int32_t>(), 16);
  EXPECT_EQ(state.at("axis").item<int32_t>(), 0);
  EXPECT_TRUE(at::equal(state.at("shape"), at::tensor({32, 16}, at::kLong)));
  auto text = [](const at::Tensor& t) {
    return std::string(static_cast<const char*>(t.data_ptr()), t.numel());
  };
  EXPECT_EQ(text(state.at("packing")), "2bit_u8");
  EXPECT_EQ(text(state.at("unpack_view_dtype")), "torch.uint8");
  EXPECT_EQ(text(state.at("compute_dtype")), "torch.float32");
  EXPECT_EQ(state.at("stores_quant_config").item<uint8_t>(), 1);
  EXPECT_EQ(state.at("round_zero").item<uint8_t>(), 0);
  EXPECT_EQ(state.count("bitpack"), 0u);
  // The codes never exceed round(2^1.58 - 1) = 2.
  at::Tensor codes = HqqUnpack(l->w_q, HqqPackingForBits(1.58), at::kFloat);
  EXPECT_LE(codes.max().item<float>(), 2.0f);
}

// A packed kernel's name: not a reference path, nor the generic dequantizing fallback.
bool IsFastKernel(const std::string& name) {
  return name.find("dequant") == std::string::npos && name.find("_ref") == std::string::npos;
}

TEST(HqqLinearTest, ForwardIsMatmulWithTheDequantizedWeightPlusBias) {
  // 4-bit groups of 32 over rows of 48: groups straddle rows, so no packed kernel.
  at::manual_seed(2);
  auto l = Quantized(at::randn({16, 48}), Params(4, 32), /*bias=*/true);
  ASSERT_NE(l, nullptr);
  l->bias = at::randn({16});
  at::Tensor x = at::randn({3, 5, 48});
  at::Tensor want = at::matmul(x, l->Dequantize().t()) + l->bias;
  EXPECT_TRUE(at::equal(l->Forward(x), want));
  EXPECT_EQ(l->kernel_name(), "dequantize_linear_ref");
}

TEST(HqqLinearTest, FourBitRowGroupsRunThePackedKernel) {
  at::manual_seed(4);
  for (const std::optional<int64_t> group : std::vector<std::optional<int64_t>>{32, std::nullopt}) {
    auto l = Quantized(at::randn({24, 64}), Params(4, group), /*bias=*/true);
    ASSERT_NE(l, nullptr);
    l->bias = at::randn({24});
    EXPECT_TRUE(IsFastKernel(l->kernel_name())) << l->kernel_name();
    at::Tensor x = at::randn({3, 5, 64});
    const at::Tensor want = at::matmul(x, l->Dequantize().t()) + l->bias;
    // The integer kernel rounds x to int16 per 32 values (measured 2e-5 of the output scale
    // at K = 64, where one block's largest |x| sets the step for all of them).
    const double tol = kernels::kCpuKernelRelativeError * want.abs().max().item<double>();
    EXPECT_LE((l->Forward(x) - want).abs().max().item<double>(), tol);
    // State untouched: W_q is still hqq's packed codes and the reference uses it.
    EXPECT_EQ(l->w_q.scalar_type(), at::kByte);
  }
}

TEST(HqqLinearTest, OtherWidthsAndAxisZeroKeepTheReferencePath) {
  at::manual_seed(5);
  for (const HqqWeightQuantParams& p : {Params(4, 32, 0), Params(3, 32), Params(8, 32)}) {
    auto l = Quantized(at::randn({16, 64}), p);
    ASSERT_NE(l, nullptr);
    EXPECT_EQ(l->kernel_name(), "dequantize_linear_ref") << p.nbits << " axis " << p.axis;
    EXPECT_EQ(l->runtime_bytes(), 0);
  }
}

TEST(HqqLinearTest, ViewAsFloatStoresTheSameBytes) {
  at::manual_seed(3);
  at::Tensor w = at::randn({16, 64});
  HqqWeightQuantParams v = Params(4, 64);
  v.view_as_float = true;
  auto a = Quantized(w, Params(4, 64));
  auto b = Quantized(w, v);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(b->w_q.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(b->Resident(b->w_q).view(at::kByte), a->Resident(a->w_q)));
  EXPECT_TRUE(at::equal(b->Dequantize(), a->Dequantize()));
}

}  // namespace
}  // namespace quantserve::quant
