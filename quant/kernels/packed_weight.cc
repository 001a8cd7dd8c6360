#include "quant/kernels/packed_weight.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/torch_status.h"
#include "quant/kernels/cpu_kernels.h"
#include "quant/kernels/cpu_pack.h"

namespace quantserve::quant::kernels {
namespace internal {

absl::Status ValidateLut4(const Lut4Weight& w) {
  if (!w.codes.defined() || w.codes.dim() != 2 || w.codes.scalar_type() != at::kByte) {
    return absl::InvalidArgumentError("lut4 weight: codes must be a uint8 [N, K] tensor");
  }
  const int64_t n = w.codes.size(0);
  const int64_t k = w.codes.size(1);
  if (n <= 0 || k <= 0 || w.group_size <= 0 || k % w.group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("lut4 weight: group_size ", w.group_size,
                                                   " does not divide K = ", k, " (N = ", n, ")"));
  }
  const std::vector<int64_t> group_shape = {n, k / w.group_size};
  auto check_groupwise = [&](const at::Tensor& t, const char* what) -> absl::Status {
    if (t.scalar_type() != at::kFloat || t.sizes() != at::IntArrayRef(group_shape)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "lut4 weight: ", what, " is ", c10::toString(t.scalar_type()), " [",
          absl::StrJoin(t.sizes(), ", "), "], expected Float [", absl::StrJoin(group_shape, ", "),
          "]"));
    }
    return absl::OkStatus();
  };
  if (!w.scale.defined()) return absl::InvalidArgumentError("lut4 weight: scale is missing");
  if (absl::Status s = check_groupwise(w.scale, "scale"); !s.ok()) return s;
  if (w.offset.defined()) {
    if (absl::Status s = check_groupwise(w.offset, "offset"); !s.ok()) return s;
  }
  if (w.activation_bits != 8 && w.activation_bits != 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("lut4 weight: activation_bits is ", w.activation_bits, ", expected 8 or 16"));
  }
  if (w.input_permutation.defined() &&
      (w.input_permutation.scalar_type() != at::kLong ||
       w.input_permutation.sizes() != at::IntArrayRef({k}))) {
    return absl::InvalidArgumentError(
        absl::StrCat("lut4 weight: input_permutation must be int64 [", k, "]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateInt8(const Int8RowwiseWeight& w) {
  if (!w.codes.defined() || w.codes.dim() != 2 || w.codes.scalar_type() != at::kChar ||
      w.codes.size(0) <= 0 || w.codes.size(1) <= 0) {
    return absl::InvalidArgumentError("int8 rowwise weight: codes must be an int8 [N, K] tensor");
  }
  if (!w.scale.defined() || w.scale.scalar_type() != at::kFloat ||
      w.scale.sizes() != at::IntArrayRef({w.codes.size(0)})) {
    return absl::InvalidArgumentError(
        absl::StrCat("int8 rowwise weight: scale must be float32 [", w.codes.size(0), "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckInput(const at::Tensor& x, int64_t k, const c10::Device& device,
                        const std::string& kernel) {
  if (!x.defined() || x.dim() < 1 || x.size(-1) != k) {
    return absl::InvalidArgumentError(absl::StrCat(kernel, ": input last dimension must be ", k));
  }
  if (x.scalar_type() != at::kFloat && x.scalar_type() != at::kBFloat16 &&
      x.scalar_type() != at::kHalf) {
    return absl::InvalidArgumentError(absl::StrCat(kernel, ": input dtype ",
                                                   c10::toString(x.scalar_type()),
                                                   " is not float32, bfloat16 or float16"));
  }
  if (x.device() != device) {
    return absl::InvalidArgumentError(absl::StrCat(kernel, ": input is on ", x.device().str(),
                                                   ", weight on ", device.str()));
  }
  return absl::OkStatus();
}

namespace {

// The generic correct path for any device and shape: dequantize, then at::linear.
class Lut4DequantLinear final : public PackedWeight {
 public:
  Lut4DequantLinear(const Lut4Weight& w, const c10::Device& device)
      : codes_(w.codes.to(device).contiguous()),
        lut_(at::tensor(at::ArrayRef<float>(w.lut.data(), w.lut.size())).to(device)),
        scale_(w.scale.to(device).contiguous()),
        offset_(w.offset.defined() ? w.offset.to(device).contiguous() : at::Tensor()),
        perm_(w.input_permutation.defined() ? w.input_permutation.to(device) : at::Tensor()),
        group_size_(w.group_size) {}

  at::Tensor Matmul(const at::Tensor& x) const override {
    TORCH_CHECK(x.size(-1) == codes_.size(1), name_, ": input last dimension must be ",
                codes_.size(1));
    const int64_t n = codes_.size(0);
    const int64_t k = codes_.size(1);
    at::Tensor w = lut_.index_select(0, codes_.flatten().to(at::kLong)).view({n, -1, group_size_});
    w = w * scale_.unsqueeze(-1);
    if (offset_.defined()) w = w + offset_.unsqueeze(-1);
    at::Tensor xin = perm_.defined() ? x.index_select(-1, perm_) : x;
    return at::linear(xin.to(at::kFloat), w.view({n, k})).to(x.scalar_type());
  }
  const std::string& name() const override { return name_; }
  int64_t bytes() const override {
    int64_t b = codes_.nbytes() + lut_.nbytes() + scale_.nbytes();
    if (offset_.defined()) b += offset_.nbytes();
    if (perm_.defined()) b += perm_.nbytes();
    return b;
  }
  std::optional<at::Tensor> Codes() const override { return codes_.to(at::kCPU).clone(); }

 private:
  const std::string name_ = "lut4_dequant_linear";
  at::Tensor codes_, lut_, scale_, offset_, perm_;
  int64_t group_size_;
};

class Int8DequantLinear final : public PackedWeight {
 public:
  Int8DequantLinear(const Int8RowwiseWeight& w, const c10::Device& device)
      : codes_(w.codes.to(device).contiguous()), scale_(w.scale.to(device).contiguous()) {}

  at::Tensor Matmul(const at::Tensor& x) const override {
    const at::Tensor w = codes_.to(at::kFloat) * scale_.unsqueeze(1);
    return at::linear(x.to(at::kFloat), w).to(x.scalar_type());
  }
  const std::string& name() const override { return name_; }
  int64_t bytes() const override { return codes_.nbytes() + scale_.nbytes(); }
  std::optional<at::Tensor> Codes() const override { return codes_.to(at::kCPU).clone(); }

 private:
  const std::string name_ = "int8_dequant_linear";
  at::Tensor codes_, scale_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PackedWeight>> NewLut4DequantLinear(const Lut4Weight& w,
                                                                   const c10::Device& device) {
  std::unique_ptr<PackedWeight> out;
  absl::Status s = common::TorchCall("lut4_dequant_linear: pack", [&] {
    out = std::make_unique<Lut4DequantLinear>(w, device);
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::unique_ptr<PackedWeight>> NewInt8DequantLinear(const Int8RowwiseWeight& w,
                                                                   const c10::Device& device) {
  std::unique_ptr<PackedWeight> out;
  absl::Status s = common::TorchCall("int8_dequant_linear: pack", [&] {
    out = std::make_unique<Int8DequantLinear>(w, device);
  });
  if (!s.ok()) return s;
  return out;
}

}  // namespace internal

absl::StatusOr<std::unique_ptr<PackedWeight>> PackLut4(const Lut4Weight& w,
                                                       const c10::Device& device) {
  if (absl::Status s = internal::ValidateLut4(w); !s.ok()) return s;
  if (device.is_cpu()) return internal::PackLut4Cpu(w, internal::CpuPackOptions{});
  return internal::NewLut4DequantLinear(w, device);
}

absl::StatusOr<std::unique_ptr<PackedWeight>> PackInt8Rowwise(const Int8RowwiseWeight& w,
                                                              const c10::Device& device) {
  if (absl::Status s = internal::ValidateInt8(w); !s.ok()) return s;
  if (device.is_cpu()) return internal::PackInt8RowwiseCpu(w, internal::CpuPackOptions{});
  return internal::NewInt8DequantLinear(w, device);
}

at::Tensor Lut4MatmulRef(const Lut4Weight& w, const at::Tensor& x) {
  const int64_t n = w.codes.size(0);
  const int64_t k = w.codes.size(1);
  const at::Tensor lut = at::tensor(at::ArrayRef<float>(w.lut.data(), w.lut.size()));
  at::Tensor deq = lut.index({w.codes.to(at::kLong)}).view({n, k / w.group_size, w.group_size});
  deq = deq * w.scale.unsqueeze(-1);
  if (w.offset.defined()) deq = deq + w.offset.unsqueeze(-1);
  at::Tensor xf = x.to(at::kFloat);
  if (w.input_permutation.defined()) xf = xf.index_select(-1, w.input_permutation);
  return at::matmul(xf, deq.view({n, k}).t()).to(x.scalar_type());
}

at::Tensor Int8RowwiseMatmulRef(const Int8RowwiseWeight& w, const at::Tensor& x) {
  const at::Tensor deq = w.codes.to(at::kFloat) * w.scale.unsqueeze(1);
  return at::matmul(x.to(at::kFloat), deq.t()).to(x.scalar_type());
}

std::string CpuKernelLevel() {
  // The integer kernels need AVX2 (their AVX-512 VNNI variants are named per layer, see
  // CpuLut4KernelName); "+avx512bf16" says the dense bf16 GEMV and prefill tiles use native bf16.
  if (internal::HasAvx2Fma()) return internal::HasNativeBf16() ? "avx2+avx512bf16" : "avx2";
  return "scalar";
}

std::string CpuLut4KernelName(bool affine, int64_t group_size, int activation_bits) {
  if (activation_bits == 8 && group_size % internal::kQ8Block == 0 &&
      internal::HasAvx512Vnni()) {
    return internal::HasAvx2Fma() ? "lut4_q8_avx512" : "lut4_q8_scalar";
  }
  if (!internal::HasAvx2Fma()) return "lut4_q16_scalar";
  return internal::HasAvx512Vnni() && internal::Lut4Avx512Wins(affine, group_size)
             ? "lut4_q16_avx512"
             : "lut4_q16_avx2";
}

std::vector<at::Tensor> MatmulSameInput(const std::vector<const PackedWeight*>& weights,
                                        const at::Tensor& x) {
  if (std::optional<std::vector<at::Tensor>> shared = internal::Lut4MatmulSameInput(weights, x)) {
    return *std::move(shared);
  }
  std::vector<at::Tensor> ys;
  ys.reserve(weights.size());
  for (const PackedWeight* w : weights) ys.push_back(w->Matmul(x));
  return ys;
}

bool KernelsEnabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("QS_KERNELS");
    return v == nullptr || std::strcmp(v, "ref") != 0;
  }();
  return enabled;
}

}  // namespace quantserve::quant::kernels
