// CPU kernels for Lut4Weight: our gemv over the chunk layout (AVX2 or scalar), LibTorch's
// _weight_int4pack_mm_for_cpu for affine tables, and the portable scalar kernels.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/torch_status.h"
#include "quant/kernels/cpu_kernels.h"
#include "quant/kernels/cpu_pack.h"

namespace quantserve::quant::kernels::internal {

bool HasAvx2Fma() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}

void Lut4GemvScalar(const Lut4Layout& w, const float* x, int64_t ldx, const float* xsum,
                    int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t groups = w.k / w.group_size;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.packed + n * (w.k / 2);
    for (int64_t m = 0; m < rows; ++m) {
      const float* xm = x + m * ldx;
      float total = 0.f;
      for (int64_t g = 0; g < groups; ++g) {
        float acc = 0.f;
        for (int64_t k = g * w.group_size; k < (g + 1) * w.group_size; k += 32) {
          const uint8_t* p = row + k / 2;
          for (int j = 0; j < 16; ++j) {
            acc += w.lut[p[j] & 0x0F] * xm[k + j] + w.lut[p[j] >> 4] * xm[k + 16 + j];
          }
        }
        total += w.scale[n * groups + g] * acc;
        if (w.offset != nullptr) total += w.offset[n * groups + g] * xsum[m * groups + g];
      }
      y[m * ldy + n] = total;
    }
  }
}

void Lut4DequantScalar(const Lut4Layout& w, int64_t n0, int64_t n1, float* out) {
  const int64_t groups = w.k / w.group_size;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.packed + n * (w.k / 2);
    float* o = out + (n - n0) * w.k;
    for (int64_t k = 0; k < w.k; k += 32) {
      const int64_t g = k / w.group_size;
      const float s = w.scale[n * groups + g];
      const float b = w.offset != nullptr ? w.offset[n * groups + g] : 0.f;
      const uint8_t* p = row + k / 2;
      for (int j = 0; j < 16; ++j) {
        o[k + j] = w.lut[p[j] & 0x0F] * s + b;
        o[k + 16 + j] = w.lut[p[j] >> 4] * s + b;
      }
    }
  }
}

namespace {

// Output rows per parallel task: a few tens of KiB of codes, enough to amortize the dispatch.
int64_t GrainRows(int64_t bytes_per_row) {
  return std::max<int64_t>(16, (64 * 1024) / std::max<int64_t>(1, bytes_per_row));
}

// Our kernel over the chunk layout (see cpu_kernels.h).
class Lut4Cpu final : public PackedWeight {
 public:
  Lut4Cpu(const Lut4Weight& w, bool avx2, int64_t max_gemv_rows)
      : name_(avx2 ? "lut4_gemv_avx2" : "lut4_gemv_scalar"),
        avx2_(avx2),
        max_gemv_rows_(max_gemv_rows),
        n_(w.codes.size(0)),
        k_(w.codes.size(1)),
        group_size_(w.group_size),
        lut_(w.lut),
        scale_(w.scale.to(at::kFloat).contiguous().clone()),
        offset_(w.offset.defined() ? w.offset.to(at::kFloat).contiguous().clone() : at::Tensor()),
        perm_(w.input_permutation.defined() ? w.input_permutation.contiguous().clone()
                                            : at::Tensor()) {
    affine_ = true;
    for (int i = 0; i < 16; ++i) affine_ = affine_ && lut_[i] == static_cast<float>(i);
    // Chunk layout: byte j of chunk c = code[32c + j] | code[32c + 16 + j] << 4.
    const at::Tensor codes = w.codes.contiguous().view({n_, k_ / 32, 2, 16});
    const at::Tensor lo = codes.select(2, 0);
    const at::Tensor hi = codes.select(2, 1);
    packed_ = at::bitwise_or(at::bitwise_and(lo, 0x0F), at::bitwise_left_shift(at::bitwise_and(hi, 0x0F), 4))
                  .to(at::kByte)
                  .reshape({n_, k_ / 2})
                  .contiguous();
  }

  at::Tensor Matmul(const at::Tensor& x) const override {
    const absl::Status s = CheckInput(x, k_, c10::Device(c10::kCPU), name_);
    TORCH_CHECK(s.ok(), std::string(s.message()));
    at::Tensor x2 = x.reshape({-1, k_});
    if (perm_.defined()) x2 = x2.index_select(1, perm_);
    const at::Tensor xf = x2.to(at::kFloat).contiguous();
    const int64_t m = xf.size(0);
    std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
    out_shape.back() = n_;
    if (m == 0) return at::empty(out_shape, x.options());
    const Lut4Layout layout = Layout();
    at::Tensor y;
    if (m <= max_gemv_rows_) {
      y = at::empty({m, n_}, xf.options());
      at::Tensor xsum;
      if (offset_.defined()) xsum = xf.view({m, k_ / group_size_, group_size_}).sum(-1).contiguous();
      const float* xp = xf.data_ptr<float>();
      const float* sp = xsum.defined() ? xsum.data_ptr<float>() : nullptr;
      float* yp = y.data_ptr<float>();
      at::parallel_for(0, n_, GrainRows(k_ / 2), [&](int64_t n0, int64_t n1) {
        if (avx2_) {
          Lut4GemvAvx2(layout, xp, k_, sp, m, yp, n_, n0, n1);
        } else {
          Lut4GemvScalar(layout, xp, k_, sp, m, yp, n_, n0, n1);
        }
      });
    } else {
      // Prefill: the float weight once per call (as the dequantize path did), then one GEMM.
      at::Tensor w = at::empty({n_, k_}, xf.options());
      float* wp = w.data_ptr<float>();
      at::parallel_for(0, n_, GrainRows(k_ * 4), [&](int64_t n0, int64_t n1) {
        if (avx2_) {
          Lut4DequantAvx2(layout, n0, n1, wp + n0 * k_);
        } else {
          Lut4DequantScalar(layout, n0, n1, wp + n0 * k_);
        }
      });
      y = at::mm(xf, w.t());
    }
    return y.to(x.scalar_type()).view(out_shape);
  }

  const std::string& name() const override { return name_; }
  int64_t bytes() const override {
    int64_t b = packed_.nbytes() + scale_.nbytes() + sizeof(lut_);
    if (offset_.defined()) b += offset_.nbytes();
    if (perm_.defined()) b += perm_.nbytes();
    return b;
  }

 private:
  Lut4Layout Layout() const {
    Lut4Layout l;
    l.packed = packed_.data_ptr<uint8_t>();
    l.scale = scale_.data_ptr<float>();
    l.offset = offset_.defined() ? offset_.data_ptr<float>() : nullptr;
    l.lut = lut_.data();
    l.affine = affine_;
    l.k = k_;
    l.group_size = group_size_;
    return l;
  }

  const std::string name_;
  const bool avx2_;
  const int64_t max_gemv_rows_;
  const int64_t n_, k_, group_size_;
  const std::array<float, 16> lut_;
  bool affine_ = false;
  at::Tensor packed_, scale_, offset_, perm_;
};

// LibTorch's int4 CPU kernel: w = (q - 8) * s + z per [K / g, N] group, so z = offset + 8 s.
// Scales and zeros are kept in each activation dtype it accepts (x dtype must match).
class Lut4AtenInt4 final : public PackedWeight {
 public:
  explicit Lut4AtenInt4(const Lut4Weight& w)
      : n_(w.codes.size(0)), k_(w.codes.size(1)), group_size_(w.group_size) {
    packed_ = at::_convert_weight_to_int4pack_for_cpu(w.codes.to(at::kInt).contiguous(), 8);
    const at::Tensor s = w.scale.to(at::kFloat);
    const at::Tensor z = (w.offset.defined() ? w.offset.to(at::kFloat) : at::zeros_like(s)) + 8 * s;
    const at::Tensor sz = at::stack({s.t(), z.t()}, -1).contiguous();  // [K / g, N, 2]
    sz_float_ = sz;
    sz_bf16_ = sz.to(at::kBFloat16);
    sz_half_ = sz.to(at::kHalf);
  }

  at::Tensor Matmul(const at::Tensor& x) const override {
    const absl::Status s = CheckInput(x, k_, c10::Device(c10::kCPU), name_);
    TORCH_CHECK(s.ok(), std::string(s.message()));
    const at::Tensor& sz = x.scalar_type() == at::kBFloat16 ? sz_bf16_
                           : x.scalar_type() == at::kHalf   ? sz_half_
                                                            : sz_float_;
    std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
    out_shape.back() = n_;
    const at::Tensor x2 = x.reshape({-1, k_}).contiguous();
    return at::_weight_int4pack_mm_for_cpu(x2, packed_, group_size_, sz).view(out_shape);
  }
  const std::string& name() const override { return name_; }
  int64_t bytes() const override {
    return packed_.nbytes() + sz_float_.nbytes() + sz_bf16_.nbytes() + sz_half_.nbytes();
  }

 private:
  const std::string name_ = "aten_weight_int4pack_mm";
  const int64_t n_, k_, group_size_;
  at::Tensor packed_, sz_float_, sz_bf16_, sz_half_;
};

bool AtenInt4Fits(const Lut4Weight& w) {
  for (int i = 0; i < 16; ++i) {
    if (w.lut[i] != static_cast<float>(i)) return false;
  }
  const int64_t g = w.group_size;
  // _convert_weight_to_int4pack_for_cpu also needs N % 16 == 0.
  return !w.input_permutation.defined() && (g == 32 || g == 64 || g == 128 || g == 256) &&
         w.codes.size(1) % 32 == 0 && w.codes.size(0) % 16 == 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PackedWeight>> PackLut4Cpu(const Lut4Weight& w,
                                                          const CpuPackOptions& options) {
  if (absl::Status s = ValidateLut4(w); !s.ok()) return s;
  if (!w.codes.device().is_cpu()) {
    return absl::InvalidArgumentError("lut4 weight: codes must be on the CPU to pack");
  }
  if (w.codes.size(1) % 32 != 0 || w.group_size % 32 != 0) {
    return NewLut4DequantLinear(w, c10::Device(c10::kCPU));
  }
  std::unique_ptr<PackedWeight> out;
  absl::Status s = common::TorchCall("lut4 pack", [&]() -> absl::Status {
    // Measured by bench/kernels_bench (bench/RESULTS.md): for bf16/fp16 activations LibTorch's
    // int4 kernel is 1.9-2.8x dense bf16 and ours 0.6-0.8x; for float32 activations LibTorch's
    // is 0.1x and ours the faster. Tables other than 0..15 (NF4/FP4) only run on ours.
    const bool half = w.compute_dtype == at::kBFloat16 || w.compute_dtype == at::kHalf;
    const bool aten = options.kernel == CpuKernel::kAten ||
                      (options.kernel == CpuKernel::kAuto && half && AtenInt4Fits(w));
    if (aten) {
      if (!AtenInt4Fits(w)) {
        return absl::InvalidArgumentError(
            "aten_weight_int4pack_mm needs an affine table, no permutation, group 32..256");
      }
      out = std::make_unique<Lut4AtenInt4>(w);
      return absl::OkStatus();
    }
    const bool avx2 = options.kernel != CpuKernel::kScalar && HasAvx2Fma();
    out = std::make_unique<Lut4Cpu>(w, avx2, options.max_gemv_rows);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

}  // namespace quantserve::quant::kernels::internal
