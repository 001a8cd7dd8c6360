#include "quant/methods/fbgemm_fp8/fbgemm_fp8_linear.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace quantserve::quant {
namespace {

constexpr float kFp8Max = 448.0f;                       // e4m3fn
constexpr float kMinScale = 1.0f / (kFp8Max * 512.0f);  // quantize.cu's min_scaling_factor

}  // namespace

std::pair<at::Tensor, at::Tensor> QuantizeFp8PerRowRef(const at::Tensor& x,
                                                       std::optional<float> scale_ub) {
  at::Tensor f = x.to(at::kFloat);
  at::Tensor a = f.abs();
  at::Tensor m = at::where(a.isnan(), at::zeros_like(a), a).amax(1);
  if (scale_ub.has_value()) m = at::clamp_max(m, *scale_ub);
  at::Tensor s = at::clamp_min(m / kFp8Max, kMinScale);
  // The CUDA conversion saturates (__NV_SATFINITE); ATen's maps out-of-range values to NaN.
  at::Tensor q = (f / s.unsqueeze(1)).clamp(-kFp8Max, kFp8Max).to(at::kFloat8_e4m3fn);
  return {q, s};
}

FbgemmFp8Linear::FbgemmFp8Linear(const FbgemmFp8LinearOptions& options)
    : QuantizedLinear(options.linear),
      activation_scale_ub_(static_cast<float>(options.activation_scale_ub)) {
  const auto& o = options.linear;
  // Quantizing at load, `weight` is the float input slot and weight_scale is derived from it.
  weight = models::MetaTensor({o.out_features, o.in_features},
                              options.prequantized ? at::kFloat8_e4m3fn : o.dtype);
  RegisterParameter("weight", &weight);
  weight_scale = models::MetaTensor({o.out_features, 1}, at::kFloat);
  if (options.prequantized) {
    RegisterParameter("weight_scale", &weight_scale);
  } else {
    RegisterDerivedParameter("weight_scale", &weight_scale);
  }
  if (o.bias) {
    bias = models::MetaTensor({o.out_features}, at::kFloat);
    RegisterParameter("bias", &bias);
  }
}

absl::Status FbgemmFp8Linear::QuantizeWeight(const at::Tensor& w, const LoadTarget& target) {
  auto [q, s] = QuantizeFp8PerRowRef(w.to(at::kBFloat16), std::nullopt);
  weight = q.to(target.device);
  weight_scale = s.unsqueeze(1).to(target.device);
  return absl::OkStatus();
}

absl::Status FbgemmFp8Linear::FinishSerializedLoad(const std::string& name,
                                                   const LoadTarget& target) {
  // e4m3fn has one NaN per sign (S.1111.111) and no infinities.
  const at::Tensor nan = weight.view(at::kByte).bitwise_and(0x7f).eq(0x7f);
  if (nan.any().item<bool>()) {
    const at::Tensor where = nan.nonzero()[0].cpu();
    return absl::DataLossError(absl::StrCat(
        "tensor '", name, ".weight' holds NaN at [", where[0].item<int64_t>(), ", ",
        where[1].item<int64_t>(),
        "]; fbgemm's quantize_fp8_per_row saturates and never writes NaN"));
  }
  const at::Tensor bad = weight_scale.isfinite().logical_not().logical_or(weight_scale.le(0));
  if (bad.any().item<bool>()) {
    const int64_t row = bad.nonzero()[0][0].item<int64_t>();
    return absl::DataLossError(absl::StrCat(
        "tensor '", name, ".weight_scale' holds ", weight_scale[row][0].item<float>(), " at row ",
        row, "; fbgemm fp8 row scales are finite and >= 1/229376"));
  }
  return absl::OkStatus();
}

at::Tensor FbgemmFp8Linear::Dequantize() const {
  return (weight.to(at::kFloat) * weight_scale).to(options().dtype);
}

at::Tensor FbgemmFp8Linear::Forward(const at::Tensor& x) const {
  const int64_t k = options().in_features;
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = options().out_features;
  auto [xq, x_scale] =
      QuantizeFp8PerRowRef(x.reshape({-1, k}).to(at::kBFloat16), activation_scale_ub_);
  at::Tensor acc = at::matmul(xq.to(at::kFloat), weight.to(at::kFloat).t());
  at::Tensor y = ((acc * weight_scale.t()) * x_scale.unsqueeze(1)).to(at::kBFloat16);
  if (bias.defined()) y = y + bias;
  return y.to(x.scalar_type()).reshape(out_shape);
}

}  // namespace quantserve::quant
