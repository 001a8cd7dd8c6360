#include "quant/methods/torchao/torchao_linear.h"

#include <ATen/ATen.h>

#include <optional>

#include "absl/strings/str_cat.h"

namespace quantserve::quant {
namespace torchao {
namespace {

// torch.finfo(torch.float32).eps: Int8Tensor.from_hp's minimum scale for every input dtype.
constexpr double kFloat32Eps = 1.1920928955078125e-07;

}  // namespace

absl::StatusOr<QuantizedState> QuantizeInt4Plain(const at::Tensor& weight, int64_t group_size) {
  const int64_t n = weight.size(0);
  const int64_t k = weight.size(1);
  if (group_size <= 0 || k % group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "int4 weight [", n, ", ", k, "] is not divisible into groups of ", group_size));
  }
  if (k % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("int4 weight [", n, ", ", k,
                                                   "] has an odd in_features; plain packing "
                                                   "stores two codes per byte"));
  }
  // int4_row_quantize_zp: per group of the float32 copy, unsigned codes over [min, max].
  const at::Tensor x = weight.to(at::kFloat).reshape({n, k / group_size, group_size});
  const at::Tensor max_val = x.amax(-1, /*keepdim=*/true);
  const at::Tensor min_val = x.amin(-1, /*keepdim=*/true);
  const at::Tensor scales = (max_val - min_val).clamp_min(1e-6) / 15;
  const at::Tensor zeros = min_val + scales * 8;
  // True division (mslk divides; only torchao's int8 path multiplies by a reciprocal).
  const at::Tensor out = x.sub(min_val).div(scales).round().clamp_(0, 15);
  const at::Tensor q = (out - 8).to(at::kChar).reshape({n, k});
  // pack_int4: even k in the low nibble (sign bits masked off), odd k shifted to the high one.
  const at::Tensor low = at::bitwise_and(q.slice(1, 0, k, 2), 0xF);
  const at::Tensor high = at::bitwise_left_shift(q.slice(1, 1, k, 2), 4);
  QuantizedState s;
  s.qdata = at::bitwise_or(low, high).contiguous();
  // [K/G, N] ("column major" for the CUTLASS kernel), then the weight's dtype.
  s.scale = scales.reshape({n, k / group_size}).t().contiguous().to(weight.scalar_type());
  s.zero_point = zeros.reshape({n, k / group_size}).t().contiguous().to(weight.scalar_type());
  return s;
}

at::Tensor UnpackInt4(const at::Tensor& qdata) {
  // Arithmetic shifts on int8 sign-extend each nibble.
  const at::Tensor low = at::bitwise_right_shift(at::bitwise_left_shift(qdata, 4), 4);
  const at::Tensor high = at::bitwise_right_shift(qdata, 4);
  return at::stack({low, high}, -1).reshape({qdata.size(0), qdata.size(1) * 2});
}

at::Tensor DequantizeInt4Plain(const QuantizedState& state, int64_t group_size,
                               c10::ScalarType dtype) {
  const at::Tensor q = UnpackInt4(state.qdata).to(at::kFloat);
  const int64_t n = q.size(0);
  const int64_t k = q.size(1);
  const at::Tensor scale = state.scale.to(at::kFloat).t().unsqueeze(-1);  // [N, K/G, 1]
  const at::Tensor zero = state.zero_point.to(at::kFloat).t().unsqueeze(-1);
  return (q.reshape({n, k / group_size, group_size}) * scale + zero).reshape({n, k}).to(dtype);
}

absl::StatusOr<QuantizedState> QuantizeInt8(const at::Tensor& x, int64_t block_rows,
                                            int64_t block_cols, bool symmetric, bool reduce_range) {
  const int64_t r = x.size(0);
  const int64_t c = x.size(1);
  if (block_rows <= 0 || block_cols <= 0 || r % block_rows != 0 || c % block_cols != 0) {
    return absl::InvalidArgumentError(absl::StrCat("int8 tensor [", r, ", ", c,
                                                   "] is not divisible into blocks of [",
                                                   block_rows, ", ", block_cols, "]"));
  }
  int64_t qmin = -128;
  int64_t qmax = 127;
  if (reduce_range) {  // Python floor division: -128 // 2, 127 // 2
    qmin = -64;
    qmax = 63;
  }
  const std::vector<int64_t> blocked = {r / block_rows, block_rows, c / block_cols, block_cols};
  const at::Tensor v = x.reshape(blocked);
  // choose_qparams_affine, in x's dtype until the final casts.
  const at::Tensor min_val = v.amin({1, 3}, /*keepdim=*/true);
  const at::Tensor max_val = v.amax({1, 3}, /*keepdim=*/true);
  const at::Tensor min_neg = at::min(min_val, at::zeros_like(min_val));
  at::Tensor max_pos = at::max(max_val, at::zeros_like(max_val));
  at::Tensor scale;
  at::Tensor zero_point;
  if (symmetric) {
    max_pos = at::max(-min_neg, max_pos);
    scale = max_pos / (static_cast<double>(qmax - qmin) / 2);
    // int((quant_max + quant_min + 1) / 2): 0 for both ranges.
    zero_point = at::full_like(scale, static_cast<int64_t>((qmax + qmin + 1) / 2.0));
    scale = at::clamp_min(scale, kFloat32Eps);
  } else {
    scale = (max_pos - min_neg) / static_cast<double>(qmax - qmin);
    scale = at::clamp_min(scale, kFloat32Eps);
    zero_point = at::clamp(c10::Scalar(qmin) - at::round(min_neg / scale), c10::Scalar(qmin),
                           c10::Scalar(qmax));
  }
  QuantizedState s;
  s.scale = scale.to(at::kFloat);
  s.zero_point = zero_point.to(at::kChar);
  // quantize_affine: multiplies by the reciprocal (Tensor.__rtruediv__ is reciprocal()).
  const at::Tensor q = at::clamp(at::round(v * at::reciprocal(s.scale)) + s.zero_point,
                                 c10::Scalar(qmin), c10::Scalar(qmax));
  s.qdata = q.reshape({r, c}).to(at::kChar);
  s.scale = s.scale.reshape({r / block_rows, c / block_cols});
  s.zero_point = s.zero_point.reshape({r / block_rows, c / block_cols});
  return s;
}

at::Tensor DequantizeInt8(const QuantizedState& state, c10::ScalarType dtype) {
  const int64_t r = state.qdata.size(0);
  const int64_t c = state.qdata.size(1);
  const int64_t sr = state.scale.size(0);
  const int64_t sc = state.scale.size(1);
  const std::vector<int64_t> blocked = {sr, r / sr, sc, c / sc};
  const std::vector<int64_t> reduced = {sr, 1, sc, 1};
  at::Tensor d = state.qdata.reshape(blocked).to(dtype);
  d = d - state.zero_point.reshape(reduced).to(dtype);
  d = d * state.scale.reshape(reduced);
  return d.reshape({r, c}).to(dtype);
}

at::Tensor IntMm(const at::Tensor& a, const at::Tensor& b) {
  // torchao's safe_int_mm: cuBLAS only for M > 16 and K, N multiples of 8, else an int32
  // matmul; on CPU _int_scaled_matmul_cpu calls torch._int_mm (s8s8) directly.
  const bool cuda_ok = a.size(0) > 16 && a.size(1) % 8 == 0 && b.size(1) % 8 == 0;
  if (a.is_cpu() || (a.is_cuda() && cuda_ok)) return at::_int_mm(a.contiguous(), b);
  return IntMmRef(a, b);
}

at::Tensor IntMmRef(const at::Tensor& a, const at::Tensor& b) {
  return at::mm(a.to(at::kDouble), b.to(at::kDouble)).to(at::kInt);
}

}  // namespace torchao

TorchAoInt4Linear::TorchAoInt4Linear(const models::LinearOptions& options,
                                     const TorchAoSchemeConfig& config)
    : QuantizedLinear(options), group_size_(config.group_size) {
  const int64_t n = options.out_features;
  const int64_t k = options.in_features;
  weight = models::MetaTensor({n, k}, options.dtype);
  weight_qdata = models::MetaTensor({n, k / 2}, at::kChar);
  weight_scale = models::MetaTensor({k / group_size_, n}, options.dtype);
  weight_zero_point = models::MetaTensor({k / group_size_, n}, options.dtype);
  RegisterParameter("weight", &weight);
  RegisterDerivedParameter("_weight_qdata", &weight_qdata);
  RegisterDerivedParameter("_weight_scale", &weight_scale);
  RegisterDerivedParameter("_weight_zero_point", &weight_zero_point);
  RegisterBias();
}

absl::Status TorchAoInt4Linear::QuantizeWeight(const at::Tensor& w, const LoadTarget& target) {
  // transformers materializes the checkpoint weight in the model dtype before quantize_.
  auto s = torchao::QuantizeInt4Plain(w.to(options().dtype), group_size_);
  if (!s.ok()) return s.status();
  weight_qdata = s->qdata.to(target.device);
  weight_scale = s->scale.to(target.device);
  weight_zero_point = s->zero_point.to(target.device);
  weight = weight_qdata;
  return absl::OkStatus();
}

at::Tensor TorchAoInt4Linear::Dequantize() const {
  return torchao::DequantizeInt4Plain({weight_qdata, weight_scale, weight_zero_point}, group_size_,
                                      options().dtype);
}

TorchAoInt8Linear::TorchAoInt8Linear(const models::LinearOptions& options,
                                     const TorchAoSchemeConfig& config)
    : QuantizedLinear(options), config_(config) {
  const int64_t n = options.out_features;
  const int64_t k = options.in_features;
  std::tie(block_rows_, block_cols_) = config.weight_granularity.BlockSize(n, k);
  weight = models::MetaTensor({n, k}, options.dtype);
  weight_qdata = models::MetaTensor({n, k}, at::kChar);
  weight_scale = models::MetaTensor({n / block_rows_, k / block_cols_}, at::kFloat);
  weight_zero_point = models::MetaTensor({n / block_rows_, k / block_cols_}, at::kChar);
  RegisterParameter("weight", &weight);
  RegisterDerivedParameter("_weight_qdata", &weight_qdata);
  RegisterDerivedParameter("_weight_scale", &weight_scale);
  RegisterDerivedParameter("_weight_zero_point", &weight_zero_point);
  RegisterBias();
}

absl::Status TorchAoInt8Linear::QuantizeWeight(const at::Tensor& w, const LoadTarget& target) {
  // Weights are always SYMMETRIC (Int8Tensor.from_hp's default mapping).
  auto s = torchao::QuantizeInt8(w.to(options().dtype), block_rows_, block_cols_,
                                 /*symmetric=*/true, config_.reduce_range);
  if (!s.ok()) return s.status();
  weight_qdata = s->qdata.to(target.device);
  weight_scale = s->scale.to(target.device);
  weight_zero_point = s->zero_point.to(target.device);
  weight = weight_qdata;
  return absl::OkStatus();
}

at::Tensor TorchAoInt8Linear::Dequantize() const {
  // Int8Tensor.dequantize(): output dtype = the dtype of the weight it was made from.
  return torchao::DequantizeInt8({weight_qdata, weight_scale, weight_zero_point}, options().dtype);
}

std::string TorchAoInt8Linear::kernel_name() const {
  if (config_.scheme == TorchAoScheme::kInt8DynamicActivationInt8Weight) {
    return "int_mm_w8a8_rowwise";
  }
  return block_cols_ == options().in_features ? "mm_w8_rowscale" : "dequantize_linear_ref";
}

at::Tensor TorchAoInt8Linear::Forward(const at::Tensor& x) const {
  const c10::ScalarType out_dtype = x.scalar_type();
  const int64_t k = options().in_features;
  const int64_t n = options().out_features;
  const at::Tensor x2 = x.reshape({-1, k});
  at::Tensor y;
  if (x2.size(0) == 0) {
    y = at::empty({0, n}, x.options());
  } else if (config_.scheme == TorchAoScheme::kInt8DynamicActivationInt8Weight) {
    const auto [act_rows, act_cols] = config_.act_granularity.BlockSize(x2.size(0), k);
    // Shapes are checked at load, so this cannot fail for a [*, K] input.
    torchao::QuantizedState a =
        *torchao::QuantizeInt8(x2, act_rows, act_cols, config_.act_symmetric, config_.reduce_range);
    const at::Tensor x_scales = a.scale.reshape({-1, 1}).to(at::kFloat);
    // int_scaled_matmul on CPU: _int_mm(a, b).to(scales.dtype) * scales.
    const at::Tensor c = torchao::IntMm(a.qdata, weight_qdata.contiguous().t());
    y = (c.to(x_scales.scalar_type()) * x_scales).to(out_dtype);
    if (!config_.act_symmetric) {
      const at::Tensor w_row_sums = weight_qdata.sum(-1);
      const at::Tensor zp_x = a.zero_point.reshape({-1, 1}).to(at::kFloat);
      const at::Tensor correction = (zp_x * x_scales) * w_row_sums.to(at::kFloat);
      y = y - correction.to(out_dtype);
    }
    y = y * weight_scale.flatten();
  } else if (block_cols_ == k) {  // per row / per tensor
    const at::Tensor m = at::mm(x2, weight_qdata.t().to(out_dtype));
    y = m * weight_scale.to(m.scalar_type()).flatten();
  } else {  // per group
    y = at::mm(x2, Dequantize().to(out_dtype).t());
  }
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  y = y.reshape(shape);
  if (bias.defined()) y.add_(bias);
  return y.to(out_dtype);
}

}  // namespace quantserve::quant
