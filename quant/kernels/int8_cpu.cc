// CPU kernels for Int8RowwiseWeight: our integer kernel (AVX2 or scalar) over the module's own
// codes, and LibTorch's _weight_int8pack_mm (chosen only on CPUs without AVX2, or by tests and
// the micro-benchmark).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/torch_status.h"
#include "quant/kernels/cpu_kernels.h"
#include "quant/kernels/cpu_pack.h"
#include "quant/kernels/worker_pool.h"

namespace quantserve::quant::kernels::internal {

void Int8Q16Scalar(const int8_t* codes, const float* scale, int64_t k, const Q16Rows& x,
                   int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t nb = x.kp / kQ16Block;
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* row = codes + n * k;
    for (int64_t m = 0; m < rows; ++m) {
      const int16_t* q = x.q + m * x.kp;
      float acc = 0.f;
      for (int64_t b = 0; b * kQ16Block < k; ++b) {
        int32_t dot = 0;
        for (int64_t i = b * kQ16Block; i < std::min(k, (b + 1) * kQ16Block); ++i) {
          dot += row[i] * q[i];
        }
        acc += static_cast<float>(dot) * x.d[m * nb + b];
      }
      y[m * ldy + n] = acc * scale[n];
    }
  }
}

namespace {

class Int8Cpu final : public PackedWeight {
 public:
  // `kernel` is kScalar, kAvx2 or kAten (resolved by the caller).
  Int8Cpu(const Int8RowwiseWeight& w, CpuKernel kernel, int64_t max_gemv_rows)
      : name_(kernel == CpuKernel::kAten   ? "aten_weight_int8pack_mm"
              : kernel == CpuKernel::kAvx2 ? "int8_q16_avx2"
                                           : "int8_q16_scalar"),
        kernel_(kernel),
        max_gemv_rows_(max_gemv_rows),
        n_(w.codes.size(0)),
        k_(w.codes.size(1)),
        // Shares the module's codes when they are already [N, K] contiguous: the module keeps
        // them for Save, and nothing writes to either after load.
        codes_(w.codes.contiguous()),
        scale_(w.scale.to(at::kFloat).contiguous().clone()) {
    if (kernel_ == CpuKernel::kAten) {
      scale_bf16_ = scale_.to(at::kBFloat16);
      scale_half_ = scale_.to(at::kHalf);
    }
  }

  at::Tensor Matmul(const at::Tensor& x) const override {
    const absl::Status s = CheckInput(x, k_, c10::Device(c10::kCPU), name_);
    TORCH_CHECK(s.ok(), std::string(s.message()));
    std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
    out_shape.back() = n_;
    const at::Tensor x2 = x.reshape({-1, k_});
    const int64_t m = x2.size(0);
    if (m == 0) return at::empty(out_shape, x.options());
    if (m > max_gemv_rows_) {
      // Prefill: tiles of the float weight in a per-task buffer, one GEMM per tile. bf16
      // activations on a CPU with native bf16 multiply bf16 tiles (see Lut4Cpu).
      const bool bf16_gemm = x.scalar_type() == at::kBFloat16 && HasNativeBf16();
      const c10::ScalarType tile_type = bf16_gemm ? at::kBFloat16 : at::kFloat;
      const at::Tensor xf = x2.to(tile_type).contiguous();
      at::Tensor y = at::empty({m, n_}, xf.options());
      // The tasks run ATen ops on OpenMP's threads: they carry the caller's thread-local state
      // (InferenceMode above all, or writing into y would be refused).
      const at::ThreadLocalState state;
      at::parallel_for(0, n_, kDequantTile, [&](int64_t n0, int64_t n1) {
        const at::ThreadLocalStateGuard guard(state);
        for (int64_t t0 = n0; t0 < n1; t0 += kDequantTile) {
          const int64_t t1 = std::min(n1, t0 + kDequantTile);
          const at::Tensor wt = (codes_.narrow(0, t0, t1 - t0).to(at::kFloat) *
                                 scale_.narrow(0, t0, t1 - t0).unsqueeze(1))
                                    .to(tile_type);
          y.narrow(1, t0, t1 - t0).copy_(at::mm(xf, wt.t()));
        }
      });
      return y.to(x.scalar_type()).view(out_shape);
    }
    if (kernel_ == CpuKernel::kAten) {
      const at::Tensor& sc = x.scalar_type() == at::kBFloat16 ? scale_bf16_
                             : x.scalar_type() == at::kHalf   ? scale_half_
                                                              : scale_;
      return at::_weight_int8pack_mm(x2.contiguous(), codes_, sc).view(out_shape);
    }
    const bool avx2 = kernel_ == CpuKernel::kAvx2;
    const GemvInput in(x2);
    GemvOutput out(x, m, n_);
    const Q16Input q = QuantizeQ16(in.x(), m, k_, avx2);
    const Q16Rows rows = q.rows();
    float* yp = out.y();
    const int8_t* cp = codes_.data_ptr<int8_t>();
    const float* sp = scale_.data_ptr<float>();
    const int64_t grain = std::max<int64_t>(16, 64 * 1024 / k_);
    ParallelFor(0, n_, grain, [&](int64_t n0, int64_t n1) {
      if (avx2) {
        Int8Q16Avx2(cp, sp, k_, rows, m, yp, n_, n0, n1);
      } else {
        Int8Q16Scalar(cp, sp, k_, rows, m, yp, n_, n0, n1);
      }
    });
    return out.Finish();
  }

  const std::string& name() const override { return name_; }
  std::optional<at::Tensor> Codes() const override { return codes_; }
  int64_t bytes() const override {
    // Codes another owner (the module) still holds are its bytes, not ours.
    int64_t b = (codes_.use_count() > 1 ? 0 : codes_.nbytes()) + scale_.nbytes();
    if (scale_bf16_.defined()) b += scale_bf16_.nbytes() + scale_half_.nbytes();
    return b;
  }

 private:
  // Weight rows per dequantized prefill tile.
  static constexpr int64_t kDequantTile = 64;

  const std::string name_;
  const CpuKernel kernel_;
  const int64_t max_gemv_rows_;
  const int64_t n_, k_;
  at::Tensor codes_, scale_, scale_bf16_, scale_half_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PackedWeight>> PackInt8RowwiseCpu(const Int8RowwiseWeight& w,
                                                                 const CpuPackOptions& options) {
  if (absl::Status s = ValidateInt8(w); !s.ok()) return s;
  if (!w.codes.device().is_cpu()) {
    return absl::InvalidArgumentError("int8 rowwise weight: codes must be on the CPU to pack");
  }
  CpuKernel kernel = options.kernel;
  if (kernel == CpuKernel::kAten && w.codes.size(1) % 8 != 0) {
    // torch 2.11's CPU _weight_int8pack_mm reads out of bounds (SIGSEGV) for such K.
    return absl::InvalidArgumentError(absl::StrCat(
        "aten_weight_int8pack_mm needs in_features % 8 == 0, got ", w.codes.size(1)));
  }
  // bench/kernels_bench (bench/RESULTS.md): our integer kernel beats _weight_int8pack_mm for
  // every activation dtype on AVX2; without AVX2, LibTorch's is the faster for 16-bit ones.
  if (kernel == CpuKernel::kAuto) {
    const bool half = w.compute_dtype == at::kBFloat16 || w.compute_dtype == at::kHalf;
    kernel = HasAvx2Fma()                        ? CpuKernel::kAvx2
             : half && w.codes.size(1) % 8 == 0 ? CpuKernel::kAten
                                                 : CpuKernel::kScalar;
  }
  if (kernel == CpuKernel::kAvx512) kernel = CpuKernel::kAvx2;  // int8 is memory-bound on AVX2
  if (kernel == CpuKernel::kAvx2 && !HasAvx2Fma()) kernel = CpuKernel::kScalar;
  std::unique_ptr<PackedWeight> out;
  absl::Status s = common::TorchCall("int8 rowwise pack", [&] {
    out = std::make_unique<Int8Cpu>(w, kernel, options.max_gemv_rows);
  });
  if (!s.ok()) return s;
  return out;
}

}  // namespace quantserve::quant::kernels::internal
