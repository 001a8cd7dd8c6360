#include "quant/kernels/attention.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "quant/kernels/cpu_kernels.h"
#include "quant/kernels/cpu_pack.h"

namespace quantserve::quant::kernels {
namespace {

struct Case {
  int64_t heads, kv_heads, d, len, lo;
};
// MHA, GQA and MQA; d on and off the 8-lane vectors; one and many positions; windows (lo > 0);
// lengths off the 8-wide softmax steps.
const std::vector<Case> kCases = {
    {1, 1, 8, 1, 0},    {4, 4, 16, 7, 0},   {8, 2, 64, 33, 0},  {32, 4, 64, 300, 0},
    {6, 3, 5, 9, 0},    {8, 1, 128, 70, 0}, {8, 2, 64, 100, 37}, {4, 2, 24, 65, 64},
};

// A cache slab [1, kv, capacity, d] with positions [0, len) filled, narrowed like KvCache does.
std::pair<at::Tensor, at::Tensor> Cache(const Case& c, at::ScalarType dtype) {
  const int64_t capacity = c.len + 5;
  at::Tensor k = at::randn({1, c.kv_heads, capacity, c.d}).to(dtype);
  at::Tensor v = at::randn({1, c.kv_heads, capacity, c.d}).to(dtype);
  return {k.narrow(2, 0, c.len), v.narrow(2, 0, c.len)};
}

// Max |got - want| over max |want|.
double RelError(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor w = want.to(at::kDouble);
  return (got.to(at::kDouble) - w).abs().max().item<double>() /
         std::max(1e-12, w.abs().max().item<double>());
}

TEST(DecodeAttention, MatchesTheOracleForEveryVariantShapeAndDtype) {
  at::manual_seed(5);
  for (const Case& c : kCases) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      auto [k, v] = Cache(c, dtype);
      // Scores of a few units, so the softmax is neither flat nor one-hot.
      const at::Tensor q = (at::randn({c.heads, c.d}) * 2.0).to(dtype);
      const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
      ASSERT_TRUE(internal::DecodeAttentionLayoutOk(q, k, v));
      const at::Tensor ref = DecodeAttentionRef(q, k, v, c.lo, scale);
      for (bool avx2 : {false, true}) {
        if (avx2 && !internal::HasAvx2Fma()) continue;
        SCOPED_TRACE(absl::StrCat("heads=", c.heads, " kv=", c.kv_heads, " d=", c.d,
                                  " len=", c.len, " lo=", c.lo, " bf16=", dtype == at::kBFloat16,
                                  " avx2=", avx2));
        const at::Tensor got = internal::DecodeAttentionCpu(q, k, v, c.lo, scale, avx2);
        ASSERT_EQ(got.scalar_type(), dtype);
        ASSERT_EQ(got.sizes(), ref.sizes());
        // float32: summation order only. bf16: the probabilities and the output are rounded
        // to bf16 (2^-9 each, relative).
        EXPECT_LE(RelError(got, ref), dtype == at::kFloat ? 2e-6 : 8e-3);
      }
    }
  }
}

TEST(DecodeAttention, AgreesWithScaledDotProductAttention) {
  at::manual_seed(6);
  for (const Case& c : kCases) {
    if (c.lo != 0) continue;  // SDPA would need a mask
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      SCOPED_TRACE(absl::StrCat("heads=", c.heads, " d=", c.d, " len=", c.len,
                                " bf16=", dtype == at::kBFloat16));
      auto [k, v] = Cache(c, dtype);
      const at::Tensor q = (at::randn({c.heads, c.d}) * 2.0).to(dtype);
      const at::Tensor sdpa =
          at::scaled_dot_product_attention(q.view({1, c.heads, 1, c.d}), k, v, std::nullopt, 0.0,
                                           false, std::nullopt, c.heads != c.kv_heads)
              .view({c.heads, c.d});
      const at::Tensor got = DecodeAttention(q, k, v, 0, 1.0 / std::sqrt(double(c.d)));
      EXPECT_LE(RelError(got, sdpa), dtype == at::kFloat ? 2e-6 : 8e-3);
    }
  }
}

TEST(DecodeAttention, RefusesLayoutsItCannotRead) {
  const Case c{8, 2, 16, 10, 0};
  auto [k, v] = Cache(c, at::kFloat);
  const at::Tensor q = at::randn({8, 16});
  EXPECT_TRUE(internal::DecodeAttentionLayoutOk(q, k, v));
  // Positions not d apart (a transposed cache), mixed dtypes, heads not a multiple of kv heads.
  EXPECT_FALSE(internal::DecodeAttentionLayoutOk(q, k.transpose(2, 3), v.transpose(2, 3)));
  EXPECT_FALSE(internal::DecodeAttentionLayoutOk(q.to(at::kBFloat16), k, v));
  EXPECT_FALSE(internal::DecodeAttentionLayoutOk(at::randn({7, 16}), k, v));
  EXPECT_FALSE(internal::DecodeAttentionLayoutOk(q, k.to(at::kHalf), v.to(at::kHalf)));
}

}  // namespace
}  // namespace quantserve::quant::kernels
