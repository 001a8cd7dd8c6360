#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>

#include "quant/kernels/fused_ops.h"
#include "quant/kernels/packed_weight.h"
#include "quant/kernels/worker_pool.h"

// Built with -ffp-contract=off (CMakeLists.txt): a fused multiply-add would round once where
// the formulas round twice.

namespace quantserve::quant::kernels {
namespace {

// Elements per parallel task: a decode step's rows stay on the calling thread.
constexpr int64_t kGrainElements = 32768;

int64_t GrainRows(int64_t row_elements) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, row_elements));
}

// Calls f.template operator()<T>() with T the C++ type of `dtype` (float, BFloat16, Half).
template <typename F>
void Dispatch(at::ScalarType dtype, F&& f) {
  switch (dtype) {
    case at::kFloat:
      f(float{});
      return;
    case at::kBFloat16:
      f(c10::BFloat16{});
      return;
    case at::kHalf:
      f(c10::Half{});
      return;
    default:
      TORCH_CHECK(false, "fused ops: unsupported dtype ", dtype);
  }
}

// Rows [r0, r1): y = w * T(x * rsqrt(variance + eps)), as transformers rounds.
template <typename T>
void RmsNormRows(const T* x, const float* variance, const T* w, T* y, int64_t r0, int64_t r1,
                 int64_t d, float eps) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    const float inv = 1.f / std::sqrt(variance[r] + eps);
    for (int64_t i = 0; i < d; ++i) {
      const T normed = static_cast<T>(static_cast<float>(xr[i]) * inv);
      yr[i] = static_cast<T>(static_cast<float>(w[i]) * static_cast<float>(normed));
    }
  }
}

// Rows [t0, t1) of x [T, H, d]: x * cos + rotate_half(x) * sin, each product and the sum
// rounded to T as ATen's elementwise ops do.
template <typename T>
void RotaryRows(T* x, const T* cos, const T* sin, int64_t t0, int64_t t1, int64_t heads,
                int64_t d) {
  const int64_t half = d / 2;
  const auto r = [](float v) { return static_cast<float>(static_cast<T>(v)); };
  for (int64_t t = t0; t < t1; ++t) {
    const T* c = cos + t * d;
    const T* s = sin + t * d;
    for (int64_t h = 0; h < heads; ++h) {
      T* v = x + (t * heads + h) * d;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = static_cast<float>(v[i]);
        const float x2 = static_cast<float>(v[i + half]);
        const float lo = r(x1 * static_cast<float>(c[i])) + r(-x2 * static_cast<float>(s[i]));
        const float hi =
            r(x2 * static_cast<float>(c[i + half])) + r(x1 * static_cast<float>(s[i + half]));
        v[i] = static_cast<T>(lo);
        v[i + half] = static_cast<T>(hi);
      }
    }
  }
}

}  // namespace

bool FusedOpsFit(const at::Tensor& x) {
  if (!x.defined() || !x.device().is_cpu() || !x.is_contiguous()) return false;
  const at::ScalarType t = x.scalar_type();
  return (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf) && KernelsEnabled();
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(FusedOpsFit(x) && weight.is_contiguous() && weight.scalar_type() == x.scalar_type() &&
                  weight.numel() == x.size(-1),
              "RmsNorm: unsupported input");
  const int64_t d = x.size(-1);
  const int64_t rows = d == 0 ? 0 : x.numel() / d;
  // The mean of squares is ATen's own reduction: its summation order decides the last bit, and
  // methods that quantize activations (int8 dynamic, LLM.int8) turn a last bit into a code.
  const at::Tensor variance = x.to(at::kFloat).pow(2).mean(-1).contiguous();
  const float* vp = variance.const_data_ptr<float>();
  at::Tensor y = at::empty_like(x);
  Dispatch(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.const_data_ptr<T>();
    const T* wp = weight.const_data_ptr<T>();
    T* yp = y.mutable_data_ptr<T>();
    ParallelFor(0, rows, GrainRows(d), [&](int64_t r0, int64_t r1) {
      RmsNormRows(xp, vp, wp, yp, r0, r1, d, static_cast<float>(eps));
    });
  });
  return y;
}

at::Tensor RmsNormRef(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const auto input_dtype = x.scalar_type();
  at::Tensor h = x.to(at::kFloat);
  const at::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(variance + eps);
  return weight * h.to(input_dtype);
}

void ApplyRotaryInPlace(at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(FusedOpsFit(x) && FusedOpsFit(cos) && FusedOpsFit(sin) && x.dim() == 3 &&
                  cos.scalar_type() == x.scalar_type() && sin.scalar_type() == x.scalar_type() &&
                  cos.dim() == 2 && cos.sizes() == sin.sizes() && cos.size(0) == x.size(0) &&
                  cos.size(1) == x.size(2) && x.size(2) % 2 == 0,
              "ApplyRotaryInPlace: unsupported input");
  const int64_t rows = x.size(0), heads = x.size(1), d = x.size(2);
  Dispatch(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    T* xp = x.mutable_data_ptr<T>();
    const T* cp = cos.const_data_ptr<T>();
    const T* sp = sin.const_data_ptr<T>();
    ParallelFor(0, rows, GrainRows(heads * d), [&](int64_t t0, int64_t t1) {
      RotaryRows(xp, cp, sp, t0, t1, heads, d);
    });
  });
}

at::Tensor RotaryRef(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  const at::Tensor c = cos.unsqueeze(1);
  const at::Tensor s = sin.unsqueeze(1);
  return x * c + rotated * s;
}

}  // namespace quantserve::quant::kernels
