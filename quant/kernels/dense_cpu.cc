// DenseLinear (dense.h): our bf16 GEMV for decode-sized inputs on CPU, at::linear otherwise.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <optional>

#include "quant/kernels/cpu_kernels.h"
#include "quant/kernels/cpu_pack.h"
#include "quant/kernels/worker_pool.h"
#include "quant/kernels/dense.h"
#include "quant/kernels/packed_weight.h"

namespace quantserve::quant::kernels {
namespace internal {

void Bf16GemvScalar(const uint16_t* w, int64_t ldw, int64_t k, const float* x, int64_t ldx,
                    int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const uint16_t* wr = w + n * ldw;
    for (int64_t m = 0; m < rows; ++m) {
      const float* xr = x + m * ldx;
      float acc = 0.f;
      for (int64_t i = 0; i < k; ++i) {
        const c10::BFloat16 b(wr[i], c10::BFloat16::from_bits());
        acc += static_cast<float>(b) * xr[i];
      }
      y[m * ldy + n] = acc;
    }
  }
}

std::optional<Bf16Kernel> ChooseBf16Kernel() {
  if (!KernelsEnabled()) return std::nullopt;
  if (HasNativeBf16()) return Bf16Kernel::kAvx512;
  if (HasAvx2Fma()) return Bf16Kernel::kAvx2;
  return std::nullopt;  // LibTorch's GEMV beats a scalar loop
}

at::Tensor Bf16Gemv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                    Bf16Kernel kernel) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kBFloat16 &&
                  weight.stride(1) == 1 && weight.device().is_cpu(),
              "Bf16Gemv: weight must be a CPU bf16 [N, K] tensor with unit column stride");
  const int64_t n = weight.size(0);
  const int64_t k = weight.size(1);
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.device().is_cpu() && x.dim() >= 1 &&
                  x.size(-1) == k,
              "Bf16Gemv: input must be a CPU bf16 [..., ", k, "] tensor");
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = n;
  const at::Tensor x2 = x.reshape({-1, k});
  const int64_t m = x2.size(0);
  if (m == 0 || n == 0) return at::zeros(out_shape, x.options());
  at::Tensor y = at::empty({m, n}, x.options().dtype(at::kFloat));
  float* yp = y.data_ptr<float>();
  const auto* wp = reinterpret_cast<const uint16_t*>(weight.const_data_ptr<at::BFloat16>());
  const int64_t ldw = weight.stride(0);
  // About 64 KiB of weights per task, so small layers stay on one thread.
  const int64_t grain = std::max<int64_t>(16, (64 * 1024) / std::max<int64_t>(1, 2 * k));
  if (kernel == Bf16Kernel::kAvx512) {
    const at::Tensor xb = x2.contiguous();
    const auto* xp = reinterpret_cast<const uint16_t*>(xb.const_data_ptr<at::BFloat16>());
    ParallelFor(0, n, grain, [&](int64_t n0, int64_t n1) {
      internal::Bf16GemvAvx512(wp, ldw, k, xp, k, m, yp, n, n0, n1);
    });
  } else {
    const at::Tensor xf = x2.to(at::kFloat).contiguous();
    const float* xp = xf.const_data_ptr<float>();
    ParallelFor(0, n, grain, [&](int64_t n0, int64_t n1) {
      if (kernel == Bf16Kernel::kAvx2) {
        internal::Bf16GemvAvx2(wp, ldw, k, xp, k, m, yp, n, n0, n1);
      } else {
        internal::Bf16GemvScalar(wp, ldw, k, xp, k, m, yp, n, n0, n1);
      }
    });
  }
  if (bias.defined()) y.add_(bias.to(at::kFloat));
  return y.to(x.scalar_type()).view(out_shape);
}

}  // namespace internal

namespace {

bool TakesGemv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (!weight.defined() || weight.dim() != 2 || weight.scalar_type() != at::kBFloat16 ||
      !weight.device().is_cpu() || weight.stride(1) != 1) {
    return false;
  }
  if (!x.defined() || x.scalar_type() != at::kBFloat16 || !x.device().is_cpu() || x.dim() < 1 ||
      x.size(-1) != weight.size(1) || weight.size(1) == 0) {
    return false;
  }
  if (bias.defined() && (!bias.device().is_cpu() || bias.dim() != 1 ||
                         bias.size(0) != weight.size(0))) {
    return false;
  }
  return x.numel() / weight.size(1) <= kDenseGemvMaxRows;
}

}  // namespace

at::Tensor DenseLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (const auto kernel = internal::ChooseBf16Kernel(); kernel && TakesGemv(x, weight, bias)) {
    return internal::Bf16Gemv(x, weight, bias, *kernel);
  }
  return at::linear(x, weight, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt);
}

std::string DenseKernelName(const at::Tensor& weight) {
  const auto kernel = internal::ChooseBf16Kernel();
  if (!kernel || !weight.defined() || weight.scalar_type() != at::kBFloat16 ||
      !weight.device().is_cpu()) {
    return "aten_linear";
  }
  return *kernel == internal::Bf16Kernel::kAvx512 ? "bf16_gemv_avx512" : "bf16_gemv_avx2";
}

at::Tensor DenseLinearRef(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const at::Tensor b = bias.defined() ? bias.to(at::kDouble) : at::Tensor();
  return at::linear(x.to(at::kDouble), weight.to(at::kDouble),
                    b.defined() ? std::optional<at::Tensor>(b) : std::nullopt)
      .to(x.scalar_type());
}

}  // namespace quantserve::quant::kernels
