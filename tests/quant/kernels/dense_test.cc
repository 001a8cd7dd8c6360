#include "quant/kernels/dense.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "quant/kernels/cpu_kernels.h"
#include "quant/kernels/cpu_pack.h"

namespace quantserve::quant::kernels {
namespace {

using internal::Bf16Kernel;

// Every bf16 GEMV variant this CPU runs (the scalar twin runs everywhere).
std::vector<Bf16Kernel> Kernels() {
  std::vector<Bf16Kernel> k = {Bf16Kernel::kScalar};
  if (internal::HasAvx2Fma()) k.push_back(Bf16Kernel::kAvx2);
  if (internal::HasNativeBf16()) k.push_back(Bf16Kernel::kAvx512);
  return k;
}

std::string Name(Bf16Kernel k) {
  return k == Bf16Kernel::kAvx512 ? "avx512" : k == Bf16Kernel::kAvx2 ? "avx2" : "scalar";
}

// Worst |got - ref| over its budget: one bf16 ulp of the reference (both sides round a float
// sum to bf16 once) plus float32 summation error, 1e-5 of sum |x||w|. <= 1 passes.
double Excess(const at::Tensor& got, const at::Tensor& x, const at::Tensor& w,
              const at::Tensor& ref) {
  const at::Tensor g = got.to(at::kDouble);
  const at::Tensor r = ref.to(at::kDouble);
  const at::Tensor mag = at::linear(x.to(at::kDouble).abs(), w.to(at::kDouble).abs());
  const at::Tensor budget = r.abs() * (1.0 / 128) + mag * 1e-5 + 1e-30;
  return ((g - r).abs() / budget).max().item<double>();
}

struct Shape {
  int64_t n, k;
};
// K below, at and off the 16/32-column steps; N below and off the 2/4-row register blocks and
// the 16-row cache block; one layer-sized shape.
const std::vector<Shape> kShapes = {{1, 1},    {3, 7},     {5, 16},   {6, 32},  {17, 33},
                                    {19, 100}, {64, 256},  {37, 1000}, {4096, 2048}};

TEST(DenseBf16Gemv, MatchesTheOracleForEveryKernelShapeAndRowCount) {
  at::manual_seed(1);
  for (const Shape& s : kShapes) {
    const at::Tensor w = at::randn({s.n, s.k}).to(at::kBFloat16);
    const at::Tensor bias = at::randn({s.n}).to(at::kBFloat16);
    for (int64_t rows : {1, 2, 3, 4, 5, 8, 13, 16, 23}) {
      const at::Tensor x = at::randn({rows, s.k}).to(at::kBFloat16);
      const at::Tensor ref = DenseLinearRef(x, w, at::Tensor());
      const at::Tensor ref_bias = DenseLinearRef(x, w, bias);
      for (Bf16Kernel kernel : Kernels()) {
        SCOPED_TRACE(absl::StrCat(Name(kernel), " n=", s.n, " k=", s.k, " rows=", rows));
        const at::Tensor y = internal::Bf16Gemv(x, w, at::Tensor(), kernel);
        ASSERT_EQ(y.scalar_type(), at::kBFloat16);
        ASSERT_EQ(y.sizes(), ref.sizes());
        EXPECT_LE(Excess(y, x, w, ref), 1.0);
        const at::Tensor yb = internal::Bf16Gemv(x, w, bias, kernel);
        EXPECT_LE(Excess(yb, x, w, ref_bias), 1.0);
      }
    }
  }
}

TEST(DenseBf16Gemv, RowsDoNotDependOnTheBatchOrTheThreadSplit) {
  at::manual_seed(2);
  const at::Tensor w = at::randn({301, 517}).to(at::kBFloat16);
  const at::Tensor x = at::randn({16, 517}).to(at::kBFloat16);
  const int threads = at::get_num_threads();
  for (Bf16Kernel kernel : Kernels()) {
    SCOPED_TRACE(Name(kernel));
    const at::Tensor batch = internal::Bf16Gemv(x, w, at::Tensor(), kernel);
    for (int64_t r = 0; r < x.size(0); ++r) {
      const at::Tensor solo = internal::Bf16Gemv(x.narrow(0, r, 1), w, at::Tensor(), kernel);
      ASSERT_TRUE(at::equal(solo[0], batch[r])) << "row " << r;
    }
    at::set_num_threads(1);
    const at::Tensor one_thread = internal::Bf16Gemv(x, w, at::Tensor(), kernel);
    at::set_num_threads(threads);
    EXPECT_TRUE(at::equal(one_thread, batch));
  }
}

TEST(DenseBf16Gemv, ReadsStridedWeightRowsAndBatchedInputs) {
  at::manual_seed(3);
  // A view of every other row: row stride 2K, unit column stride (as a narrowed weight).
  const at::Tensor base = at::randn({40, 96}).to(at::kBFloat16);
  const at::Tensor w = base.view({20, 2, 96}).select(1, 0);
  ASSERT_EQ(w.stride(0), 192);
  const at::Tensor x = at::randn({2, 3, 96}).to(at::kBFloat16);
  const at::Tensor ref = DenseLinearRef(x, w, at::Tensor());
  for (Bf16Kernel kernel : Kernels()) {
    SCOPED_TRACE(Name(kernel));
    const at::Tensor y = internal::Bf16Gemv(x, w, at::Tensor(), kernel);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 20}));
    EXPECT_LE(Excess(y.reshape({6, 20}), x.reshape({6, 96}), w, ref.reshape({6, 20})), 1.0);
  }
  EXPECT_EQ(internal::Bf16Gemv(at::zeros({0, 96}, at::kBFloat16), w, at::Tensor(),
                               Bf16Kernel::kScalar)
                .sizes(),
            (std::vector<int64_t>{0, 20}));
}

TEST(DenseLinear, DecodeSizedBf16InputsTakeTheGemvAndTheRestAtenLinear) {
  at::manual_seed(4);
  const at::Tensor w = at::randn({48, 64}).to(at::kBFloat16);
  const auto kernel = internal::ChooseBf16Kernel();
  const std::string expected = !kernel                          ? "aten_linear"
                               : *kernel == Bf16Kernel::kAvx512 ? "bf16_gemv_avx512"
                                                                : "bf16_gemv_avx2";
  EXPECT_EQ(DenseKernelName(w), expected);
  EXPECT_EQ(DenseKernelName(w.to(at::kFloat)), "aten_linear");
  EXPECT_EQ(DenseKernelName(at::empty({48, 64}, at::TensorOptions(at::kBFloat16).device(at::kMeta))),
            "aten_linear");

  const at::Tensor decode = at::randn({kDenseGemvMaxRows, 64}).to(at::kBFloat16);
  const at::Tensor prefill = at::randn({kDenseGemvMaxRows + 1, 64}).to(at::kBFloat16);
  if (kernel) {
    EXPECT_TRUE(at::equal(DenseLinear(decode, w, at::Tensor()),
                          internal::Bf16Gemv(decode, w, at::Tensor(), *kernel)));
  } else {
    EXPECT_TRUE(at::equal(DenseLinear(decode, w, at::Tensor()), at::linear(decode, w)));
  }
  EXPECT_TRUE(at::equal(DenseLinear(prefill, w, at::Tensor()), at::linear(prefill, w)));
  // float32 weights and inputs: at::linear, bit for bit.
  const at::Tensor wf = w.to(at::kFloat);
  const at::Tensor xf = decode.to(at::kFloat);
  const at::Tensor b = at::randn({48});
  EXPECT_TRUE(at::equal(DenseLinear(xf, wf, b), at::linear(xf, wf, b)));
}

}  // namespace
}  // namespace quantserve::quant::kernels
