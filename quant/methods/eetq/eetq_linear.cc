#include "quant/methods/eetq/eetq_linear.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/torch_status.h"
#include "quant/methods/eetq/eetq_layout.h"

namespace quantserve::quant {
namespace {

// C `roundf`: halves go away from zero (at::round rounds them to even). x - trunc(x) is exact
// in float32, so the comparison with 0.5 is too.
at::Tensor RoundHalfAwayFromZero(const at::Tensor& x) {
  at::Tensor t = at::trunc(x);
  return t + at::where((x - t).abs() >= 0.5, x.sign(), at::zeros_like(x));
}

}  // namespace

std::pair<at::Tensor, at::Tensor> EetqQuantizeRef(const at::Tensor& weight) {
  at::Tensor w = weight.to(at::kFloat);
  at::Tensor a = w.abs();
  at::Tensor m = at::where(a.isnan(), at::zeros_like(a), a).amax(1);
  at::Tensor s = m * (1.0 / 128.0);  // 2^-7: exact, like EETQ's `*= 1.f / 128`
  at::Tensor x = w / s.unsqueeze(1);
  at::Tensor q =
      at::where(x.isnan(), at::full_like(x, 127.0), RoundHalfAwayFromZero(x).clamp(-128.0, 127.0));
  return {q.to(at::kChar).t().contiguous(), s.to(at::kHalf)};
}

EetqLinear::EetqLinear(const models::LinearOptions& options, bool prequantized)
    : QuantizedLinear(options) {
  // Quantizing at load, `weight` is the float input slot and weight_scales is derived from it.
  weight = prequantized ? models::MetaTensor({options.in_features, options.out_features}, at::kChar)
                        : models::MetaTensor({options.out_features, options.in_features},
                                             options.dtype);
  RegisterParameter("weight", &weight);
  weight_scales = models::MetaTensor({options.out_features}, at::kHalf);
  if (prequantized) {
    RegisterParameter("weight_scales", &weight_scales);
  } else {
    RegisterDerivedParameter("weight_scales", &weight_scales);
  }
  if (options.bias) {
    bias = models::MetaTensor({options.out_features}, at::kHalf);
    RegisterParameter("bias", &bias);
  }
}

absl::Status EetqLinear::QuantizeWeight(const at::Tensor& w, const LoadTarget& target) {
  const int64_t k = options().in_features;
  const int64_t n = options().out_features;
  // EETQ's weight layout (eetq_layout.h): quant_weights refuses out % 64 != 0 and in % 32 != 0,
  // and for in % 64 == 32 its tile interleave overwrites half the codes.
  if (k % 64 != 0 || n % 64 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "eetq needs in_features and out_features divisible by 64 (its CUTLASS weight layout); "
        "got in_features ",
        k, ", out_features ", n));
  }
  // transformers casts the checkpoint weight to the model dtype before quant_weights.
  auto [q, scales] = EetqQuantizeRef(w.to(options().dtype));
  weight = q.to(target.device);
  weight_scales = scales.to(target.device);
  return PackForKernels(target);
}

absl::Status EetqLinear::PackForKernels(const LoadTarget& target) {
  if (!KernelsEnabled() || !target.device.is_cpu()) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<kernels::PackedWeight>> packed;
  QS_RETURN_IF_ERROR(common::TorchCall("eetq: packing for the CPU kernel", [&] {
    packed = kernels::PackInt8Rowwise({weight.t().contiguous(), weight_scales.to(at::kFloat), options().dtype},
                                      target.device);
  }));
  if (!packed.ok()) return packed.status();
  SetPackedWeight(*std::move(packed));
  // One resident copy: the kernel holds the codes [N, K]; `weight` [K, N] is their transpose,
  // rebuilt when Save or Dequantize needs it.
  return common::TorchCall("eetq: dropping the transposed codes", [&] {
    ReleaseToPacked(&weight, [](const at::Tensor& codes) { return codes.t().contiguous(); });
  });
}

absl::Status EetqLinear::FinishSerializedLoad(const std::string& name, const LoadTarget& target) {
  const at::Tensor bad = weight_scales.isfinite().logical_not().logical_or(weight_scales.lt(0));
  if (bad.any().item<bool>()) {
    const int64_t n = bad.nonzero()[0][0].item<int64_t>();
    return absl::DataLossError(absl::StrCat("tensor '", name, ".weight_scales' holds ",
                                            weight_scales[n].item<float>(), " at ", n,
                                            "; EETQ scales are absmax / 128 (finite, >= 0)"));
  }
  auto plain = EetqUnpreprocessSm80(weight);
  if (!plain.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, ".weight': ", plain.status().message()));
  }
  weight = *std::move(plain);
  return PackForKernels(target);
}

absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> EetqLinear::SerializedTensors()
    const {
  auto preprocessed = EetqPreprocessSm80(Resident(weight));
  if (!preprocessed.ok()) return preprocessed.status();
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.emplace_back("weight", *std::move(preprocessed));
  out.emplace_back("weight_scales", weight_scales);
  if (bias.defined()) out.emplace_back("bias", bias);
  return out;
}

at::Tensor EetqLinear::Dequantize() const {
  const auto dtype = options().dtype;
  return Resident(weight).t().to(dtype) * weight_scales.to(dtype).unsqueeze(1);
}

}  // namespace quantserve::quant
