#include "quant/methods/eetq/eetq_layout.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <utility>
#include <vector>

namespace quantserve::quant {
namespace {

// EETQ's preprocess_weights_for_mixed_gemm for SM 7.5-8.9 int8, as plain byte loops over the
// row-major [k, n] codes, step by step (an oracle independent of the tensor reshapes).
std::vector<int8_t> PreprocessLoops(const std::vector<int8_t>& q, int64_t k, int64_t n) {
  std::vector<int8_t> a(q.size()), b(q.size()), c(q.size());
  for (int64_t row = 0; row < k; ++row) {  // 1. row permutation in 16-row blocks
    const int64_t t = row % 16;
    const int64_t src = row - t + 8 * ((t % 4) / 2) + t % 2 + 2 * (t / 4);
    std::memcpy(&a[row * n], &q[src * n], n);
  }
  for (int64_t row = 0; row < k; ++row) {  // 2. transpose to [n][k]
    for (int64_t col = 0; col < n; ++col) b[col * k + row] = a[row * n + col];
  }
  const int64_t words = k / 4;  // 3. 64-row tiles (16 words) of column pairs interleaved
  for (int64_t col = 0; col < n; ++col) {
    for (int64_t w = 0; w < words; ++w) {
      const int64_t out_word = (col / 2) * words * 2 + 2 * (w - w % 16) + 16 * (col % 2) + w % 16;
      std::memcpy(&c[out_word * 4], &b[(col * words + w) * 4], 4);
    }
  }
  for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<int8_t>(c[i] + 128);  // 4. bias
  for (size_t i = 0; i < c.size(); i += 4) std::swap(c[i + 1], c[i + 2]);        //    and swap
  return c;
}

std::vector<int8_t> Bytes(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::vector<int8_t>(c.data_ptr<int8_t>(), c.data_ptr<int8_t>() + c.numel());
}

TEST(EetqLayoutTest, MatchesEetqsPreprocessingLoops) {
  for (auto [k, n] : {std::pair<int64_t, int64_t>{64, 64}, {128, 192}, {256, 768}}) {
    at::Tensor q = at::randint(-128, 128, {k, n}, at::kChar);
    auto p = EetqPreprocessSm80(q);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->sizes(), q.sizes());
    EXPECT_EQ(p->scalar_type(), at::kChar);
    EXPECT_EQ(Bytes(*p), PreprocessLoops(Bytes(q), k, n)) << k << "x" << n;
  }
}

TEST(EetqLayoutTest, FirstByteIsTheFirstCodePlus128) {
  at::Tensor q = at::zeros({64, 64}, at::kChar);
  q[0][0] = -3;
  auto p = EetqPreprocessSm80(q);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->flatten()[0].item<int8_t>(), static_cast<int8_t>(125));
  EXPECT_EQ((*p == static_cast<int8_t>(-128)).sum().item<int64_t>(), 64 * 64 - 1);  // 0 + 128
}

TEST(EetqLayoutTest, UnpreprocessInvertsPreprocess) {
  at::Tensor q = at::randint(-128, 128, {256, 128}, at::kChar);
  auto p = EetqPreprocessSm80(q);
  ASSERT_TRUE(p.ok()) << p.status();
  auto back = EetqUnpreprocessSm80(*p);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(at::equal(*back, q));
  // And the other way round, from arbitrary preprocessed bytes.
  at::Tensor raw = at::randint(-128, 128, {128, 256}, at::kChar);
  auto plain = EetqUnpreprocessSm80(raw);
  ASSERT_TRUE(plain.ok()) << plain.status();
  auto again = EetqPreprocessSm80(*plain);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(at::equal(*again, raw));
}

TEST(EetqLayoutTest, RefusesShapesAndDtypesOutsideTheLayout) {
  for (const at::Tensor& t : {at::zeros({32, 64}, at::kChar), at::zeros({64, 96}, at::kChar),
                              at::zeros({64, 64}, at::kFloat), at::zeros({64}, at::kChar)}) {
    auto p = EetqPreprocessSm80(t);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << t.sizes();
    EXPECT_EQ(EetqUnpreprocessSm80(t).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace quantserve::quant
