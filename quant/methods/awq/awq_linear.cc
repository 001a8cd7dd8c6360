#include "quant/methods/awq/awq_linear.h"

#include <ATen/ATen.h>

#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/torch_status.h"
#include "models/layers.h"
#include "quant/bit_packing.h"
#include "quant/kernels/packed_weight.h"

namespace quantserve::quant {
namespace {

// Nibble i of a gemm word holds column 8c + kAwqOrder[i]; column 8c + j is nibble kAwqReverse[j].
constexpr int64_t kAwqReverse[8] = {0, 4, 1, 5, 2, 6, 3, 7};

// [R, C] int32 words -> [R, 8C] int8 nibbles, nibble i of word c at column 8c + i.
at::Tensor UnpackNibbles(const at::Tensor& packed) {
  at::Tensor shifts = at::arange(0, 32, 4, packed.options());
  at::Tensor n = at::bitwise_and(at::bitwise_right_shift(packed.unsqueeze(-1), shifts), 15);
  return n.reshape({packed.size(0), packed.size(1) * 8}).to(at::kChar);
}

// The inverse of kAwqReverse.
constexpr int64_t kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

// Permutes the last dimension in groups of 8: column c takes (c / 8) * 8 + order[c % 8].
at::Tensor PermuteInEights(const at::Tensor& unpacked, const int64_t (&order)[8]) {
  const int64_t cols = unpacked.size(-1);
  std::vector<int64_t> index(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) index[static_cast<size_t>(c)] = (c / 8) * 8 + order[c % 8];
  return unpacked.index_select(-1, at::tensor(index, at::kLong).to(unpacked.device())).contiguous();
}

// Undoes the gemm interleave along the last dimension.
at::Tensor ReverseAwqOrder(const at::Tensor& unpacked) {
  return PermuteInEights(unpacked, kAwqReverse);
}

absl::Status CheckFiniteScales(const at::Tensor& s, const std::string& full_name) {
  at::Tensor bad = at::logical_not(at::isfinite(s));
  if (bad.any().item<bool>()) {
    at::Tensor where = bad.nonzero()[0];
    return absl::DataLossError(absl::StrCat(
        "tensor '", full_name, "' has a non-finite scale ",
        s.index({where[0], where[1]}).item<float>(), " at [", where[0].item<int64_t>(), ", ",
        where[1].item<int64_t>(), "]"));
  }
  return absl::OkStatus();
}

}  // namespace

int64_t AwqGemvZerosWidth(int64_t in_features, int64_t group_size) {
  int64_t multiplier;
  if (group_size >= 128) {
    multiplier = 1;
  } else if (group_size == 64) {
    multiplier = 2;
  } else if (group_size == 32) {
    multiplier = 4;
  } else {
    return -1;
  }
  const int64_t base = (in_features / group_size + 7) / 8;
  return (base + multiplier - 1) / multiplier * multiplier;
}

absl::StatusOr<std::shared_ptr<AwqLinear>> AwqLinear::Create(const models::LinearOptions& options,
                                                            const AwqLinearOptions& awq) {
  const int64_t k = options.in_features;
  const int64_t n = options.out_features;
  const int64_t group = awq.group_size == -1 ? k : awq.group_size;
  const char* packing = awq.packing == AwqPacking::kGemm ? "gemm" : "gemv";
  if (group <= 0 || k % group != 0) {
    return absl::InvalidArgumentError(absl::StrCat("awq group_size ", awq.group_size,
                                                   " does not divide in_features ", k));
  }
  if (n % 8 != 0 || (awq.packing == AwqPacking::kGemv && k % 8 != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("awq ", packing, " packs 8 weights per int32: [",
                                                   n, ", ", k, "] cannot be packed"));
  }
  if (awq.packing == AwqPacking::kGemv && AwqGemvZerosWidth(k, group) < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "awq gemv has no zeros layout for group_size ", group, " (AutoAWQ's "
        "calculate_zeros_width takes >= 128, 64 or 32)"));
  }
  return std::shared_ptr<AwqLinear>(new AwqLinear(options, awq, group));
}

AwqLinear::AwqLinear(const models::LinearOptions& options, const AwqLinearOptions& awq,
                     int64_t group)
    : QuantizedLinear(options), awq_(awq), group_(group) {
  const int64_t k = options.in_features;
  const int64_t n = options.out_features;
  groups_ = k / group_;
  if (awq_.packing == AwqPacking::kGemm) {
    qweight = models::MetaTensor({k, n / 8}, at::kInt);
    qzeros = models::MetaTensor({groups_, n / 8}, at::kInt);
    scales = models::MetaTensor({groups_, n}, at::kHalf);
  } else {
    zeros_width_ = AwqGemvZerosWidth(k, group_);
    qweight = models::MetaTensor({n, k / 8}, at::kInt);
    qzeros = models::MetaTensor({n, zeros_width_}, at::kInt);
    scales = models::MetaTensor({n, zeros_width_ * 8}, at::kHalf);
  }
  RegisterParameter("qweight", &qweight);
  RegisterParameter("qzeros", &qzeros);
  RegisterParameter("scales", &scales);
  if (options.bias) {
    bias = models::MetaTensor({n}, at::kHalf);
    RegisterParameter("bias", &bias);
  }
  RegisterRuntimeTensor(&codes_);
  RegisterRuntimeTensor(&zeros_);
  RegisterRuntimeTensor(&scales_kn_);
}

std::string AwqLinear::LayoutName() const {
  return absl::StrCat("awq ", awq_.packing == AwqPacking::kGemm ? "gemm" : "gemv",
                      " 4-bit, group_size ", group_);
}

absl::Status AwqLinear::QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) {
  return absl::FailedPreconditionError(
      "AWQ cannot quantize at load: its scales are searched on calibration data");
}

absl::Status AwqLinear::LoadSerializedTensor(const std::string& local, const std::string& full_name,
                                             const at::Tensor& value, const LoadTarget& target) {
  const at::Tensor* slot = nullptr;
  if (local == "qweight") slot = &qweight;
  if (local == "qzeros") slot = &qzeros;
  if (local == "scales") slot = &scales;
  if (local == "bias" && bias.defined()) slot = &bias;
  if (slot == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", full_name, "' is not part of the ", LayoutName(), " layout"));
  }
  // Float tensors convert to the fp16 slot as transformers' load_state_dict copy does; the
  // packed int32 tensors must match exactly.
  const bool float_slot = at::isFloatingType(slot->scalar_type());
  const c10::ScalarType expected =
      float_slot && at::isFloatingType(value.scalar_type()) && value.element_size() > 1
          ? value.scalar_type()
          : slot->scalar_type();
  absl::Status s = ExpectTensor(full_name, value, slot->sizes(), expected, LayoutName());
  if (!s.ok() && expected != slot->scalar_type()) {
    s = ExpectTensor(full_name, value, slot->sizes(), slot->scalar_type(), LayoutName());
  }
  if (!s.ok()) return s;
  return QuantizedLinear::LoadSerializedTensor(local, full_name, value, target);
}

absl::Status AwqLinear::FinishSerializedLoad(const std::string& name, const LoadTarget& target) {
  const at::Tensor qz = qzeros.cpu();
  const at::Tensor sc = scales.cpu();
  const std::string scales_name = name + ".scales";
  codes_ = UnpackCodes();
  if (awq_.packing == AwqPacking::kGemm) {
    zeros_ = ReverseAwqOrder(UnpackNibbles(qz));
    scales_kn_ = sc.contiguous();
  } else {
    const at::Tensor z = UnpackNibbles(qz);       // [N, 8 Wz], group g at column g
    const at::Tensor z_pad = z.narrow(1, groups_, z.size(1) - groups_);
    if (z_pad.numel() > 0 && z_pad.ne(0).any().item<bool>()) {
      at::Tensor where = z_pad.ne(0).nonzero()[0];
      const int64_t row = where[0].item<int64_t>();
      const int64_t group = where[1].item<int64_t>() + groups_;
      return absl::DataLossError(absl::StrCat(
          "tensor '", name, ".qzeros' has zero ", z_pad.index({where[0], where[1]}).item<int64_t>(),
          " in the padding past its ", groups_, " groups (row ", row, ", group ", group,
          "); AutoAWQ leaves the padding zero"));
    }
    const at::Tensor s_pad = sc.narrow(1, groups_, sc.size(1) - groups_);
    if (s_pad.numel() > 0 && s_pad.ne(0).any().item<bool>()) {
      at::Tensor where = s_pad.ne(0).nonzero()[0];
      return absl::DataLossError(absl::StrCat(
          "tensor '", scales_name, "' has scale ", s_pad.index({where[0], where[1]}).item<float>(),
          " in the padding past its ", groups_, " groups (row ", where[0].item<int64_t>(),
          ", column ", where[1].item<int64_t>() + groups_, "); AutoAWQ leaves the padding zero"));
    }
    zeros_ = z.narrow(1, 0, groups_).t().contiguous();
    scales_kn_ = sc.narrow(1, 0, groups_).t().contiguous();
  }
  if (absl::Status s = CheckFiniteScales(scales_kn_, scales_name); !s.ok()) return s;
  codes_ = codes_.to(target.device);
  zeros_ = zeros_.to(target.device);
  scales_kn_ = scales_kn_.to(target.device);
  if (target.device.is_cpu() && KernelsEnabled()) {
    QS_RETURN_IF_ERROR(PackForCpu(name, target.device));
  }
  return absl::OkStatus();
}

at::Tensor AwqLinear::UnpackCodes() const {
  const at::Tensor qw = Resident(qweight).cpu();
  if (awq_.packing == AwqPacking::kGemm) return ReverseAwqOrder(UnpackNibbles(qw));
  return UnpackNibbles(qw).t().contiguous();  // [N, K] -> [K, N]
}

absl::Status AwqLinear::PackForCpu(const std::string& name, const c10::Device& device) {
  kernels::Lut4Weight w;
  w.codes = codes_.cpu().t().to(at::kByte).contiguous();  // [N, K]
  for (int i = 0; i < 16; ++i) w.lut[static_cast<size_t>(i)] = static_cast<float>(i);
  const at::Tensor s = scales_kn_.cpu().to(at::kFloat);  // [K/G, N]; fp16 -> fp32 is exact
  w.scale = s.t().contiguous();
  // z·s is exact in float32 (4-bit z, 11-bit s): q·s + offset is (q - z)·s to one rounding.
  w.offset = (zeros_.cpu().to(at::kFloat) * s).neg().t().contiguous();
  w.group_size = group_;
  w.compute_dtype = options().dtype;
  w.activation_bits = options().activation_bits;
  auto packed = kernels::PackLut4(w, device);
  if (!packed.ok()) {
    return common::Annotate(packed.status(),
                            absl::StrCat("packing ", name, " (", LayoutName(), ")"));
  }
  SetPackedWeight(std::move(*packed));
  codes_ = at::Tensor();
  // One resident copy: `qweight` is rebuilt from the kernel's codes [N, K] when Save or
  // Dequantize needs it.
  return common::TorchCall("awq: dropping the serialized codes", [&] {
    ReleaseToPacked(&qweight, [gemm = awq_.packing == AwqPacking::kGemm](const at::Tensor& codes) {
      // The inverse of UnpackCodes: nibbles back into words (and the GEMM interleave).
      return PackNibblesToInt32(gemm ? PermuteInEights(codes.t(), kAwqOrder) : codes);
    });
  });
}

std::string AwqLinear::kernel_name() const {
  return packed_weight() != nullptr ? packed_weight()->name() : "gemm_w4a16_awq_ref";
}

at::Tensor AwqLinear::DequantizeKn() const {
  // dequantize_gemm: int8 difference times the fp16 scale, rounded once to fp16.
  const at::Tensor codes = codes_.defined() ? codes_ : UnpackCodes().to(zeros_.device());
  at::Tensor diff = at::sub(codes, zeros_.repeat_interleave(group_, 0));
  return at::mul(diff.to(at::kHalf), scales_kn_.repeat_interleave(group_, 0));
}

at::Tensor AwqLinear::Dequantize() const { return DequantizeKn().t(); }

at::Tensor AwqLinear::Forward(const at::Tensor& x) const {
  const at::Tensor xh = x.to(at::kHalf);
  at::Tensor out =
      packed_weight() != nullptr
          ? packed_weight()->Matmul(xh)
          : at::matmul(xh.to(at::kFloat), DequantizeKn().to(at::kFloat)).to(at::kHalf);
  if (awq_.packing == AwqPacking::kGemm) {
    if (bias.defined()) out = out + bias;
    return out.to(x.scalar_type());
  }
  out = out.to(x.scalar_type());
  return bias.defined() ? out + bias : out;
}

}  // namespace quantserve::quant
