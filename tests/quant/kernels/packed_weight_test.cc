#include "quant/kernels/packed_weight.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "quant/kernels/cpu_kernels.h"
#include "quant/kernels/cpu_pack.h"

namespace quantserve::quant::kernels {
namespace {

using internal::CpuKernel;
using internal::CpuPackOptions;

// bitsandbytes' NF4 table.
constexpr std::array<float, 16> kNf4 = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230850220947f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

std::array<float, 16> Affine() {
  std::array<float, 16> lut{};
  for (int i = 0; i < 16; ++i) lut[i] = static_cast<float>(i);
  return lut;
}

struct Shape {
  int64_t n, k, group;
};

Lut4Weight RandomLut4(const Shape& s, bool nf4, bool offset, bool perm) {
  Lut4Weight w;
  w.codes = at::randint(0, 16, {s.n, s.k}, at::kByte);
  w.lut = nf4 ? kNf4 : Affine();
  w.scale = at::rand({s.n, s.k / s.group}) * 0.09 + 0.01;
  if (offset) w.offset = at::randn({s.n, s.k / s.group}) * 0.1;
  w.group_size = s.group;
  if (perm) w.input_permutation = at::randperm(s.k, at::kLong);
  return w;
}

// Max |got - want| over the output scale (fp32), or the worst excess over a bf16-rounding
// budget (one bf16 ulp of the value plus `floor` of the scale); <= 1 passes for bf16.
// The integer kernels get floor kCpuKernelRelativeError: q16 rounding (~4e-5 of the scale,
// more with NF4's int16 table) is seen by outputs near zero too.
constexpr double kQ16Floor = kCpuKernelRelativeError;
double Error(const at::Tensor& got, const at::Tensor& want, bool bf16, double floor = 1e-5) {
  const at::Tensor g = got.to(at::kFloat);
  const at::Tensor w = want.to(at::kFloat);
  const double scale = std::max(1e-6, w.abs().max().item<double>());
  const at::Tensor diff = (g - w).abs();
  if (!bf16) return diff.max().item<double>() / scale;
  const at::Tensor budget = w.abs() * (1.0 / 128) + floor * scale;
  return (diff / budget).max().item<double>();
}

// Prefill tiles with bf16 activations on a CPU with native bf16: x @ W^T with W rounded to
// bf16 and multiplied in bf16 (as transformers does), W given as float [N, K].
bool Bf16Tiles(bool bf16, bool tiles) { return bf16 && tiles && internal::HasNativeBf16(); }
at::Tensor Bf16TileRef(const at::Tensor& w, const at::Tensor& x) {
  return at::mm(x.to(at::kBFloat16), w.to(at::kBFloat16).t());
}

std::string ExpectedLut4Name(const Shape& s, CpuKernel kernel, bool nf4) {
  if (s.k % 32 != 0 || s.group % 32 != 0) return "lut4_dequant_linear";
  if (kernel == CpuKernel::kScalar || !internal::HasAvx2Fma()) return "lut4_q16_scalar";
  if (kernel == CpuKernel::kAvx512 && internal::HasAvx512Vnni()) return "lut4_q16_avx512";
  if (kernel == CpuKernel::kAuto) return CpuLut4KernelName(!nf4, s.group);
  return "lut4_q16_avx2";
}

const std::vector<Shape> kShapes = {
    {5, 32, 32},      // K = 32 edge (one padded 64-column chunk)
    {7, 96, 32},      // K % 64 == 32: the last chunk is half padding
    {7, 192, 96},     // a group that is an odd multiple of 32 straddles chunks
    {67, 256, 32},    // groups of 32
    {67, 256, 64},    // groups of 64
    {33, 512, 128},   // groups of 128
    {33, 512, 512},   // one group per row
    {100, 4096, 128}, // N spans several parallel chunks, not a multiple of one
    {9, 48, 16},      // K % 32 != 0: generic path
    {9, 64, 16},      // group % 32 != 0: generic path
};
const std::vector<int64_t> kRows = {1, 2, 3, 5, 17, 64};

TEST(Lut4Test, CpuKernelLevelSaysAvx2OnThisMachine) {
  EXPECT_EQ(CpuKernelLevel(), !internal::HasAvx2Fma()     ? "scalar"
                            : internal::HasNativeBf16() ? "avx2+avx512bf16"
                                                        : "avx2");
  // The CI and development machines have AVX2; a scalar answer there means dispatch broke.
  __builtin_cpu_init();
  EXPECT_EQ(internal::HasAvx2Fma(),
            __builtin_cpu_supports("avx2") != 0 && __builtin_cpu_supports("fma") != 0);
}

// The reference for the integer kernels: Lut4MatmulRef on the inputs they see, x rounded to
// q16 and the table rounded to int16 (see Q16TableScale).
at::Tensor Lut4Q16Ref(const Lut4Weight& w, const at::Tensor& x) {
  at::Tensor x2 = x.reshape({-1, w.codes.size(1)}).to(at::kFloat);
  if (w.input_permutation.defined()) x2 = x2.index_select(1, w.input_permutation);
  const internal::Q16Input q = internal::QuantizeQ16(x2.contiguous(), /*avx2=*/false);
  Lut4Weight rounded = w;
  rounded.input_permutation = at::Tensor();
  const float s = internal::Q16TableScale(w.lut);
  for (float& v : rounded.lut) v = std::nearbyint(v * s) / s;
  return Lut4MatmulRef(rounded, internal::DequantizeQ16(q, w.codes.size(1)));
}

// The kernels' at::parallel_for really uses the intra-op threads (it silently runs on one
// thread in a translation unit built without OpenMP).
TEST(KernelThreadsTest, ParallelForUsesEveryIntraOpThread) {
  const int threads = at::get_num_threads();
  if (threads < 2) GTEST_SKIP() << "one intra-op thread on this machine: nothing to check";
  EXPECT_EQ(internal::ParallelForThreads(threads), threads);
}

// Regression: prefill tiles run ATen ops on OpenMP's threads, which must carry the caller's
// InferenceMode (the server's forward runs in it; writing into its output was refused).
TEST(KernelThreadsTest, PrefillTilesRunUnderInferenceMode) {
  at::manual_seed(13);
  const Lut4Weight w4 = RandomLut4({300, 256, 64}, /*nf4=*/false, /*offset=*/true, false);
  Int8RowwiseWeight w8;
  w8.codes = at::randint(-127, 128, {300, 256}, at::kChar);
  w8.scale = at::rand({300}) * 0.01 + 0.001;
  auto p4 = PackLut4(w4, c10::Device(c10::kCPU));
  auto p8 = PackInt8Rowwise(w8, c10::Device(c10::kCPU));
  ASSERT_TRUE(p4.ok() && p8.ok());
  const at::Tensor x = at::randn({40, 256});
  c10::InferenceMode inference;
  EXPECT_LE(Error((*p4)->Matmul(x), Lut4MatmulRef(w4, x), false), 1e-5);
  EXPECT_LE(Error((*p8)->Matmul(x), Int8RowwiseMatmulRef(w8, x), false), 1e-5);
}

// Every kernel variant, table, offset/permutation and dtype: within float rounding of the q16
// oracle, and within the q16 rounding of Lut4MatmulRef (the float formula).
TEST(Lut4Test, MatchesReference) {
  at::manual_seed(1);
  struct Variant {
    CpuKernel kernel;
    int64_t max_gemv_rows;
  };
  // Default choice (rows above 4 take the dequantized tiles); scalar, AVX2 and AVX-512 with the
  // integer kernel forced for every M (row tiles of 4 + rest).
  const std::vector<Variant> variants = {{CpuKernel::kAuto, 4},
                                         {CpuKernel::kScalar, 1000},
                                         {CpuKernel::kAvx2, 1000},
                                         {CpuKernel::kAvx512, 1000}};
  double worst_f32 = 0, worst_q16 = 0, worst_bf16 = 0;
  for (const Shape& s : kShapes) {
    for (bool nf4 : {false, true}) {
      for (bool offset : {false, true}) {
        for (bool perm : {false, true}) {
          const Lut4Weight w = RandomLut4(s, nf4, offset, perm);
          for (const Variant& v : variants) {
            SCOPED_TRACE(absl::StrCat("N=", s.n, " K=", s.k, " g=", s.group, " nf4=", nf4,
                                      " offset=", offset, " perm=", perm,
                                      " kernel=", static_cast<int>(v.kernel)));
            auto packed = internal::PackLut4Cpu(w, CpuPackOptions{v.kernel, v.max_gemv_rows});
            ASSERT_TRUE(packed.ok()) << packed.status();
            const std::string name = ExpectedLut4Name(s, v.kernel, nf4);
            EXPECT_EQ((*packed)->name(), name);
            EXPECT_GT((*packed)->bytes(), 0);
            const bool q16 = name != "lut4_dequant_linear";
            for (int64_t m : kRows) {
              for (bool bf16 : {false, true}) {
                SCOPED_TRACE(absl::StrCat("M=", m, " bf16=", bf16));
                const at::Tensor x = at::randn({m, s.k}).to(bf16 ? at::kBFloat16 : at::kFloat);
                const at::Tensor y = (*packed)->Matmul(x);
                ASSERT_EQ(y.scalar_type(), x.scalar_type());
                ASSERT_EQ(y.sizes(), at::IntArrayRef({m, s.n}));
                const bool int_kernel = q16 && m <= v.max_gemv_rows;
                if (Bf16Tiles(bf16, q16 && !int_kernel)) {
                  // The float weight in input-column order: the formula applied to I.
                  const at::Tensor wf = Lut4MatmulRef(w, at::eye(s.k)).t();
                  EXPECT_LE(Error(y, Bf16TileRef(wf, x), true, 1e-4), 1.0);
                  continue;
                }
                const double err =
                    Error(y, Lut4MatmulRef(w, x), bf16, int_kernel ? kQ16Floor : 1e-5);
                if (bf16) {
                  EXPECT_LE(err, 1.0);
                  worst_bf16 = std::max(worst_bf16, err);
                  continue;
                }
                if (int_kernel) {
                  const double err_q16 = Error(y, Lut4Q16Ref(w, x), false);
                  EXPECT_LE(err_q16, 2e-6);
                  worst_q16 = std::max(worst_q16, err_q16);
                  EXPECT_LE(err, kQ16Floor);
                } else {
                  EXPECT_LE(err, 1e-5);
                }
                worst_f32 = std::max(worst_f32, err);
              }
            }
          }
        }
      }
    }
  }
  std::cout << "worst fp32 error / output scale: vs float formula " << worst_f32
            << ", vs q16 oracle " << worst_q16 << "; worst bf16 error / budget: " << worst_bf16
            << "\n";
}

// Per row, the integer kernels compute the same sums whatever the batch and the thread split:
// a row alone equals the same row inside a batch, bit for bit.
TEST(Lut4Test, RowResultDoesNotDependOnBatch) {
  at::manual_seed(11);
  for (bool nf4 : {false, true}) {
    const Lut4Weight w = RandomLut4({130, 512, 64}, nf4, /*offset=*/!nf4, /*perm=*/false);
    auto packed = internal::PackLut4Cpu(w, CpuPackOptions{CpuKernel::kAuto, 16});
    ASSERT_TRUE(packed.ok()) << packed.status();
    const at::Tensor x = at::randn({7, 512});
    const at::Tensor batch = (*packed)->Matmul(x);
    for (int64_t i = 0; i < 7; ++i) {
      EXPECT_TRUE(at::equal((*packed)->Matmul(x.narrow(0, i, 1)), batch.narrow(0, i, 1)))
          << "row " << i << " nf4=" << nf4;
    }
  }
}

// The reference for the int8-activation kernels: Lut4MatmulRef on what they multiply, x
// rounded to int8 per 64 columns and the table to int8 (Q8TableValues).
at::Tensor Lut4Q8Ref(const Lut4Weight& w, const at::Tensor& x) {
  const int64_t k = w.codes.size(1);
  at::Tensor x2 = x.reshape({-1, k}).to(at::kFloat);
  if (w.input_permutation.defined()) x2 = x2.index_select(1, w.input_permutation);
  x2 = x2.contiguous();
  const int64_t m = x2.size(0), kp2 = internal::RoundUp(k, internal::kLut4Pair);
  const at::Tensor q = at::empty({m, kp2}, at::kChar);
  const at::Tensor dv = at::empty({m, kp2 / 8});
  const at::Tensor bsum = at::empty({m, kp2 / 64});
  internal::QuantizeQ8PairRows(x2.data_ptr<float>(), k, m, k, kp2, q.data_ptr<int8_t>(),
                               dv.data_ptr<float>(), bsum.data_ptr<float>());
  Lut4Weight rounded = w;
  rounded.input_permutation = at::Tensor();
  rounded.lut = internal::Q8TableValues(w.lut);
  return Lut4MatmulRef(rounded, internal::DequantizeQ8PairRows(q, dv, k));
}

// Int8 activations (opt-in): within float rounding of the q8 oracle for the scalar twin and
// the AVX-512 kernel, over tables, offsets, permutations, K with a half pair at the end, groups
// of 64..K and batches 1..64; within kCpuInt8ActivationError of the float formula.
TEST(Lut4Q8Test, MatchesReference) {
  at::manual_seed(21);
  const std::vector<Shape> shapes = {{5, 64, 64},    {7, 192, 64},   {67, 256, 64},
                                     {33, 512, 128}, {9, 384, 192},  {33, 512, 512},
                                     {100, 4096, 128}};
  std::vector<CpuKernel> kernels = {CpuKernel::kScalar};
  if (internal::HasAvx512Vnni() && internal::HasAvx2Fma()) {
    kernels.push_back(CpuKernel::kAvx512);
  } else {
    std::cout << "no AVX-512 VNNI on this CPU: only the scalar int8-activation kernel runs\n";
  }
  double worst_oracle = 0, worst_formula = 0;
  for (const Shape& s : shapes) {
    for (bool nf4 : {false, true}) {
      for (bool offset : {false, true}) {
        Lut4Weight w = RandomLut4(s, nf4, offset, /*perm=*/offset);
        w.activation_bits = 8;
        for (CpuKernel kernel : kernels) {
          SCOPED_TRACE(absl::StrCat("N=", s.n, " K=", s.k, " g=", s.group, " nf4=", nf4,
                                    " offset=", offset, " kernel=", static_cast<int>(kernel)));
          auto packed = internal::PackLut4Cpu(w, CpuPackOptions{kernel, 1000});
          ASSERT_TRUE(packed.ok()) << packed.status();
          EXPECT_EQ((*packed)->name(),
                    kernel == CpuKernel::kScalar ? "lut4_q8_scalar" : "lut4_q8_avx512");
          for (int64_t m : kRows) {
            SCOPED_TRACE(absl::StrCat("M=", m));
            const at::Tensor x = at::randn({m, s.k});
            const at::Tensor y = (*packed)->Matmul(x);
            ASSERT_EQ(y.sizes(), at::IntArrayRef({m, s.n}));
            const double e_oracle = Error(y, Lut4Q8Ref(w, x), false);
            const double e_formula = Error(y, Lut4MatmulRef(w, x), false);
            EXPECT_LE(e_oracle, 2e-6);
            EXPECT_LE(e_formula, kCpuInt8ActivationError);
            worst_oracle = std::max(worst_oracle, e_oracle);
            worst_formula = std::max(worst_formula, e_formula);
          }
        }
      }
    }
  }
  std::cout << "int8 activations, worst error / output scale: vs q8 oracle " << worst_oracle
            << ", vs float formula " << worst_formula << "\n";
}

// Projections that read one input (q/k/v) through MatmulSameInput: every result equals that
// weight's own Matmul bit for bit, on the shared path (same K, groups, activation precision) and
// on the fallback (a permuted weight, another K, more rows than the GEMV takes).
TEST(Lut4SharedInputTest, EqualsSeparateMatmulsBitForBit) {
  at::manual_seed(23);
  std::vector<CpuKernel> kernels = {CpuKernel::kScalar, CpuKernel::kAvx2};
  if (internal::HasAvx512Vnni()) kernels.push_back(CpuKernel::kAvx512);
  for (CpuKernel kernel : kernels) {
    for (int bits : {16, 8}) {
      for (bool nf4 : {false, true}) {
        for (int64_t group : {64, 128}) {
          SCOPED_TRACE(absl::StrCat("kernel=", static_cast<int>(kernel), " bits=", bits,
                                    " nf4=", nf4, " g=", group));
          std::vector<std::unique_ptr<PackedWeight>> owned;
          for (int64_t n : {256, 64, 64, 200}) {  // q, k, v, and one of another shape below
            Lut4Weight w = RandomLut4({n, 512, group}, nf4, /*offset=*/!nf4, /*perm=*/false);
            w.activation_bits = bits;
            auto packed = internal::PackLut4Cpu(w, CpuPackOptions{kernel, 16});
            ASSERT_TRUE(packed.ok()) << packed.status();
            owned.push_back(*std::move(packed));
          }
          Lut4Weight other = RandomLut4({32, 256, group}, nf4, !nf4, /*perm=*/false);
          Lut4Weight permuted = RandomLut4({48, 512, group}, nf4, !nf4, /*perm=*/true);
          other.activation_bits = permuted.activation_bits = bits;
          auto packed_other = internal::PackLut4Cpu(other, CpuPackOptions{kernel, 16});
          auto packed_permuted = internal::PackLut4Cpu(permuted, CpuPackOptions{kernel, 16});
          ASSERT_TRUE(packed_other.ok() && packed_permuted.ok());
          const std::vector<const PackedWeight*> same = {owned[0].get(), owned[1].get(),
                                                         owned[2].get(), owned[3].get()};
          const std::vector<const PackedWeight*> mixed = {owned[0].get(),
                                                          packed_permuted->get()};
          for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
            for (int64_t m : {1, 3, 16, 17}) {
              SCOPED_TRACE(absl::StrCat("M=", m, " dtype=", c10::toString(dtype)));
              const at::Tensor x = at::randn({m, 512}).to(dtype);
              for (const auto* group_of : {&same, &mixed}) {
                const std::vector<at::Tensor> ys = MatmulSameInput(*group_of, x);
                ASSERT_EQ(ys.size(), group_of->size());
                for (size_t i = 0; i < ys.size(); ++i) {
                  EXPECT_EQ(ys[i].scalar_type(), dtype);
                  EXPECT_TRUE(at::equal(ys[i], (*group_of)[i]->Matmul(x))) << "weight " << i;
                }
              }
              // Another K cannot share: each runs alone, with its own input.
              const at::Tensor x256 = at::randn({m, 256}).to(dtype);
              const std::vector<at::Tensor> y_other = MatmulSameInput({packed_other->get()}, x256);
              EXPECT_TRUE(at::equal(y_other[0], (*packed_other)->Matmul(x256)));
            }
          }
        }
      }
    }
  }
}

TEST(Lut4Q8Test, RowResultDoesNotDependOnBatchAndFallsBackForGroupsOf32) {
  at::manual_seed(22);
  for (bool nf4 : {false, true}) {
    Lut4Weight w = RandomLut4({130, 512, 64}, nf4, /*offset=*/!nf4, /*perm=*/false);
    w.activation_bits = 8;
    auto packed = internal::PackLut4Cpu(w, CpuPackOptions{CpuKernel::kAuto, 16});
    ASSERT_TRUE(packed.ok()) << packed.status();
    EXPECT_EQ((*packed)->name(), CpuLut4KernelName(!nf4, 64, 8));
    const at::Tensor x = at::randn({7, 512});
    const at::Tensor batch = (*packed)->Matmul(x);
    for (int64_t i = 0; i < 7; ++i) {
      EXPECT_TRUE(at::equal((*packed)->Matmul(x.narrow(0, i, 1)), batch.narrow(0, i, 1)))
          << "row " << i << " nf4=" << nf4;
    }
  }
  // Groups of 32 split a chunk: the 16-bit kernel runs, as the name says.
  Lut4Weight w32 = RandomLut4({16, 256, 32}, /*nf4=*/false, false, false);
  w32.activation_bits = 8;
  auto p32 = internal::PackLut4Cpu(w32, CpuPackOptions{});
  ASSERT_TRUE(p32.ok());
  EXPECT_EQ((*p32)->name().rfind("lut4_q16_", 0), 0u) << (*p32)->name();
  EXPECT_EQ(CpuLut4KernelName(true, 32, 8), CpuLut4KernelName(true, 32, 16));
  w32.activation_bits = 4;
  EXPECT_EQ(PackLut4(w32, c10::Device(c10::kCPU)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The int8 quantizer: the nibble order is a permutation of each 128 columns, |q| <= 127 with the
// chunk maximum at +-127, padding zero, and the rows it stands for within half a step of x.
TEST(Q8Test, QuantizerOrderAndBounds) {
  std::vector<int> seen(128, 0);
  for (int64_t b = 0; b < 128; ++b) ++seen[internal::Q8PairColumn(b)];
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 128);
  at::manual_seed(23);
  for (int64_t k : {64, 192, 320, 2048}) {
    at::Tensor x = at::randn({3, k}) * 10;
    x[1].zero_();
    const int64_t kp2 = internal::RoundUp(k, 128);
    const at::Tensor q = at::empty({3, kp2}, at::kChar), dv = at::empty({3, kp2 / 8});
    const at::Tensor bsum = at::empty({3, kp2 / 64});
    internal::QuantizeQ8PairRows(x.data_ptr<float>(), k, 3, k, kp2, q.data_ptr<int8_t>(),
                                 dv.data_ptr<float>(), bsum.data_ptr<float>());
    EXPECT_EQ(q.abs().max().item<int>(), 127);
    EXPECT_EQ(q[1].abs().max().item<int>(), 0);
    const at::Tensor xd = internal::DequantizeQ8PairRows(q, dv, k);
    for (int64_t c = 0; c < k / 64; ++c) {
      const at::Tensor blk = x.narrow(1, 64 * c, 64);
      const at::Tensor amax = blk.abs().amax(1);
      EXPECT_TRUE(((xd.narrow(1, 64 * c, 64) - blk).abs() <=
                   amax.unsqueeze(1) / 254 * 1.001 + 1e-12).all().item<bool>()) << "chunk " << c;
      EXPECT_TRUE(at::allclose(bsum.select(1, c), xd.narrow(1, 64 * c, 64).sum(1), 1e-5, 1e-4));
    }
  }
}

// The quantizer's codes: |q| <= 32767, the block maximum maps to +-32767, padding is zero, and
// the AVX2 and scalar quantizers agree exactly.
TEST(Q16Test, QuantizerMatchesScalarTwinAndBounds) {
  at::manual_seed(12);
  for (int64_t k : {32, 40, 64, 100, 2048}) {
    at::Tensor x = at::randn({3, k}) * 10;
    x[1].zero_();  // an all-zero row: d = 0, codes 0
    const internal::Q16Input s = internal::QuantizeQ16(x, /*avx2=*/false);
    const at::Tensor sq = s.q_tensor();
    ASSERT_EQ(sq.size(1) % 64, 0);
    EXPECT_EQ(sq.abs().max().item<int>(), 32767);
    EXPECT_EQ(sq[1].abs().max().item<int>(), 0);
    EXPECT_EQ(sq.narrow(1, k, sq.size(1) - k).abs().sum().item<int64_t>(), 0);
    EXPECT_LE((internal::DequantizeQ16(s, k) - x).abs().max().item<double>(),
              x.abs().max().item<double>() / 65534 * 1.001);
    if (internal::HasAvx2Fma()) {
      const internal::Q16Input a = internal::QuantizeQ16(x, /*avx2=*/true);
      EXPECT_TRUE(at::equal(a.q_tensor(), sq)) << "K=" << k;
      EXPECT_TRUE(at::equal(a.d_tensor(), s.d_tensor())) << "K=" << k;
      EXPECT_TRUE(at::allclose(a.bsum_tensor(), s.bsum_tensor(), 1e-6, 1e-6)) << "K=" << k;
    }
  }
}

TEST(Lut4Test, PublicPackPicksTheFastKernelAndKeepsBatchShape) {
  at::manual_seed(2);
  const Shape s{64, 256, 64};
  const Lut4Weight w = RandomLut4(s, /*nf4=*/true, /*offset=*/false, /*perm=*/false);
  auto packed = PackLut4(w, c10::Device(c10::kCPU));
  ASSERT_TRUE(packed.ok()) << packed.status();
  EXPECT_EQ((*packed)->name(), CpuLut4KernelName(/*affine=*/false, 64));
  // Packed codes are 4 bits: well under the one-byte-per-code input.
  EXPECT_LT((*packed)->bytes(), w.codes.nbytes());
  const at::Tensor x = at::randn({2, 3, s.k});  // [batch, seq, K]
  const at::Tensor y = (*packed)->Matmul(x);
  ASSERT_EQ(y.sizes(), at::IntArrayRef({2, 3, s.n}));
  EXPECT_LE(Error(y, Lut4MatmulRef(w, x), false), kQ16Floor);
  // float16 activations too.
  const at::Tensor xh = x.to(at::kHalf);
  EXPECT_EQ((*packed)->Matmul(xh).scalar_type(), at::kHalf);
}

TEST(Lut4Test, AtenInt4KernelMatchesReference) {
  at::manual_seed(3);
  for (int64_t g : {32, 64, 128, 256}) {
    const Shape s{48, 512, g};
    for (bool offset : {false, true}) {
      const Lut4Weight w = RandomLut4(s, /*nf4=*/false, offset, /*perm=*/false);
      auto packed = internal::PackLut4Cpu(w, CpuPackOptions{CpuKernel::kAten, 4});
      ASSERT_TRUE(packed.ok()) << packed.status();
      EXPECT_EQ((*packed)->name(), "aten_weight_int4pack_mm");
      for (int64_t m : {1, 3, 17}) {
        SCOPED_TRACE(absl::StrCat("g=", g, " offset=", offset, " M=", m));
        const at::Tensor x = at::randn({m, s.k});
        EXPECT_LE(Error((*packed)->Matmul(x), Lut4MatmulRef(w, x), false), 1e-5);
      }
    }
  }
  // Not an affine table: LibTorch's kernel cannot express it.
  const Lut4Weight nf4 = RandomLut4({8, 64, 32}, /*nf4=*/true, false, false);
  EXPECT_EQ(internal::PackLut4Cpu(nf4, CpuPackOptions{CpuKernel::kAten, 4}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Lut4Test, BadShapesAreInvalidArgument) {
  const c10::Device cpu(c10::kCPU);
  const Lut4Weight good = RandomLut4({8, 64, 32}, false, true, true);
  EXPECT_TRUE(PackLut4(good, cpu).ok());
  auto expect_invalid = [&](const Lut4Weight& w, const char* what) {
    EXPECT_EQ(PackLut4(w, cpu).status().code(), absl::StatusCode::kInvalidArgument) << what;
  };
  Lut4Weight w = good;
  w.codes = good.codes.to(at::kInt);
  expect_invalid(w, "int32 codes");
  w = good;
  w.codes = good.codes.flatten();
  expect_invalid(w, "1-d codes");
  w = good;
  w.group_size = 48;
  expect_invalid(w, "group does not divide K");
  w = good;
  w.group_size = 0;
  expect_invalid(w, "group 0");
  w = good;
  w.scale = good.scale.t().contiguous();
  expect_invalid(w, "scale transposed");
  w = good;
  w.scale = at::Tensor();
  expect_invalid(w, "no scale");
  w = good;
  w.offset = good.offset.to(at::kHalf);
  expect_invalid(w, "fp16 offset");
  w = good;
  w.input_permutation = at::arange(63, at::kLong);
  expect_invalid(w, "short permutation");
  // A wrong input width throws from Matmul (callers wrap it in TorchCall).
  auto packed = PackLut4(good, cpu);
  ASSERT_TRUE(packed.ok());
  EXPECT_THROW((*packed)->Matmul(at::randn({1, 63})), c10::Error);
  EXPECT_THROW((*packed)->Matmul(at::randn({1, 64}).to(at::kDouble)), c10::Error);
}

TEST(Int8RowwiseTest, MatchesReference) {
  at::manual_seed(4);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{5, 32}, {37, 100}, {9, 17}, {100, 4096}};
  for (auto [n, k] : shapes) {
    Int8RowwiseWeight w;
    w.codes = at::randint(-128, 128, {n, k}, at::kChar);
    w.scale = at::rand({n}) * 0.01 + 0.001;
    for (CpuKernel kernel : {CpuKernel::kAuto, CpuKernel::kScalar, CpuKernel::kAvx2,
                             CpuKernel::kAten}) {
      for (int64_t max_rows : {int64_t{4}, int64_t{1000}}) {
        auto packed = internal::PackInt8RowwiseCpu(w, CpuPackOptions{kernel, max_rows});
        if (kernel == CpuKernel::kAten && k % 8 != 0) {
          EXPECT_EQ(packed.status().code(), absl::StatusCode::kInvalidArgument);
          continue;
        }
        ASSERT_TRUE(packed.ok()) << packed.status();
        // Contiguous codes are shared with the module, not copied: only the scales count.
        EXPECT_LT((*packed)->bytes(), n * k);
        EXPECT_GE((*packed)->bytes(), n * 4);
        const std::string want_name =
            kernel == CpuKernel::kAten ? "aten_weight_int8pack_mm"
            : kernel == CpuKernel::kScalar || !internal::HasAvx2Fma() ? "int8_q16_scalar"
                                                                      : "int8_q16_avx2";
        EXPECT_EQ((*packed)->name(), want_name);
        for (int64_t m : kRows) {
          for (bool bf16 : {false, true}) {
            SCOPED_TRACE(absl::StrCat("N=", n, " K=", k, " kernel=", static_cast<int>(kernel),
                                      " max_rows=", max_rows, " M=", m, " bf16=", bf16));
            const at::Tensor x = at::randn({m, k}).to(bf16 ? at::kBFloat16 : at::kFloat);
            const at::Tensor y = (*packed)->Matmul(x);
            ASSERT_EQ(y.scalar_type(), x.scalar_type());
            const bool q16 = want_name != "aten_weight_int8pack_mm" && m <= max_rows;
            if (Bf16Tiles(bf16, m > max_rows)) {
              const at::Tensor wf = w.codes.to(at::kFloat) * w.scale.unsqueeze(1);
              EXPECT_LE(Error(y, Bf16TileRef(wf, x), true, 1e-4), 1.0);
              continue;
            }
            const double err = Error(y, Int8RowwiseMatmulRef(w, x), bf16, q16 ? kQ16Floor : 1e-5);
            if (q16 && !bf16) {
              // Within float rounding of the q16 oracle, within q16 rounding of the formula.
              const internal::Q16Input q = internal::QuantizeQ16(x.contiguous(), false);
              const at::Tensor want = Int8RowwiseMatmulRef(w, internal::DequantizeQ16(q, k));
              EXPECT_LE(Error(y, want, false), 2e-6);
              EXPECT_LE(err, kQ16Floor);
              continue;
            }
            // LibTorch's kernel takes the scale in bf16 for bf16 input: 2^-9 more relative error.
            const bool bf16_scale = bf16 && kernel == CpuKernel::kAten && m <= max_rows;
            EXPECT_LE(err, bf16 ? (bf16_scale ? 1.5 : 1.0) : 1e-5);
          }
        }
      }
    }
  }
  Int8RowwiseWeight bad;
  bad.codes = at::zeros({4, 8}, at::kChar);
  bad.scale = at::ones({5});
  EXPECT_EQ(PackInt8Rowwise(bad, c10::Device(c10::kCPU)).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad.scale = at::ones({4}, at::kHalf);
  EXPECT_EQ(PackInt8Rowwise(bad, c10::Device(c10::kCPU)).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad.codes = at::zeros({4, 8}, at::kByte);
  bad.scale = at::ones({4});
  EXPECT_EQ(PackInt8Rowwise(bad, c10::Device(c10::kCPU)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quantserve::quant::kernels
