#include "quant/methods/torchao/torchao_linear.h"

#include <ATen/ATen.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/torch_status.h"

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
  QuantizedState s;
  s.qdata = PackInt4(q);
  // [K/G, N] ("column major" for the CUTLASS kernel), then the weight's dtype.
  s.scale = scales.reshape({n, k / group_size}).t().contiguous().to(weight.scalar_type());
  s.zero_point = zeros.reshape({n, k / group_size}).t().contiguous().to(weight.scalar_type());
  return s;
}

at::Tensor PackInt4(const at::Tensor& q) {
  // pack_int4: even k in the low nibble (sign bits masked off), odd k shifted to the high one.
  const int64_t k = q.size(1);
  const at::Tensor low = at::bitwise_and(q.slice(1, 0, k, 2), 0xF);
  const at::Tensor high = at::bitwise_left_shift(q.slice(1, 1, k, 2), 4);
  return at::bitwise_or(low, high).contiguous();
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

namespace {

// torchao >= 0.15 names (registered) and torchao 0.14's spellings of the same tensors.
constexpr std::pair<const char*, const char*> kNames[] = {
    {"_weight_qdata", "weight:qdata"},
    {"_weight_scale", "weight:scale"},
    {"_weight_zero_point", "weight:zero_point"}};

bool Loaded(const at::Tensor& t) { return t.defined() && !t.is_meta(); }

void DumpPython(const nlohmann::ordered_json& j, std::string* out) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::object: {
      out->push_back('{');
      bool first = true;
      for (const auto& [k, v] : j.items()) {
        if (!first) out->append(", ");
        first = false;
        DumpPython(nlohmann::ordered_json(k), out);
        out->append(": ");
        DumpPython(v, out);
      }
      out->push_back('}');
      return;
    }
    case nlohmann::ordered_json::value_t::array: {
      out->push_back('[');
      for (size_t i = 0; i < j.size(); ++i) {
        if (i > 0) out->append(", ");
        DumpPython(j[i], out);
      }
      out->push_back(']');
      return;
    }
    default:
      // Scalars: nlohmann's compact form equals Python's (ensure_ascii escapes non-ASCII).
      out->append(j.dump(-1, ' ', /*ensure_ascii=*/true));
  }
}

nlohmann::ordered_json DtypeJson(c10::ScalarType dtype) {
  const char* name = dtype == c10::ScalarType::BFloat16 ? "bfloat16"
                     : dtype == c10::ScalarType::Half   ? "float16"
                                                        : "float32";
  return {{"_type", "torch.dtype"}, {"_data", name}};
}

nlohmann::ordered_json GranularityJson(const TorchAoGranularity& g) {
  nlohmann::ordered_json data = nlohmann::ordered_json::object();
  const char* type = "PerTensor";
  if (g.kind == TorchAoGranularity::Kind::kPerRow) {
    type = "PerRow";
    data["dim"] = g.dim;
  } else if (g.kind == TorchAoGranularity::Kind::kPerGroup) {
    type = "PerGroup";
    data["group_size"] = g.group_size;
  }
  return {{"_type", type}, {"_data", data}};
}

}  // namespace

std::string PythonJsonDumps(const nlohmann::ordered_json& j) {
  std::string out;
  DumpPython(j, &out);
  return out;
}

TorchAoLinearBase::TorchAoLinearBase(const models::LinearOptions& options, bool prequantized)
    : QuantizedLinear(options), prequantized_(prequantized) {}

void TorchAoLinearBase::RegisterState() {
  weight = models::MetaTensor({options().out_features, options().in_features}, options().dtype);
  at::Tensor* state[] = {&weight_qdata, &weight_scale, &weight_zero_point};
  if (!prequantized_) {
    RegisterParameter("weight", &weight);
    for (int i = 0; i < 3; ++i) RegisterDerivedParameter(kNames[i].first, state[i]);
  } else {
    for (int i = 0; i < 3; ++i) {
      for (const char* name : {kNames[i].first, kNames[i].second}) {
        RegisterParameter(name, state[i]);
        (void)MarkOptional(name);  // presence is checked in FinishSerializedLoad
      }
    }
  }
  RegisterBias();
}

absl::Status TorchAoLinearBase::LoadSerializedTensor(const std::string& local,
                                                     const std::string& full_name,
                                                     const at::Tensor& value,
                                                     const LoadTarget& target) {
  for (const auto& [current, legacy] : kNames) {
    if (local != legacy) continue;
    // One tensor, two spellings: refuse a checkpoint that carries both.
    for (const auto& p : NamedParameters()) {
      if (p.name == current && Loaded(*p.slot.tensor)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", full_name, "' duplicates the torchao >= 0.15 spelling '", current, "'"));
      }
    }
    return QuantizedLinear::LoadSerializedTensor(current, full_name, value, target);
  }
  for (const auto& [current, legacy] : kNames) {
    if (local != current) continue;
    for (const auto& p : NamedParameters()) {
      if (p.name == current && Loaded(*p.slot.tensor)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", full_name, "' duplicates the torchao 0.14 spelling '", legacy, "'"));
      }
    }
  }
  return QuantizedLinear::LoadSerializedTensor(local, full_name, value, target);
}

absl::Status TorchAoLinearBase::FinishSerializedLoad(const std::string& name,
                                                     const LoadTarget& target) {
  for (const auto& [current, legacy] : kNames) (void)UnregisterParameter(legacy);
  const bool need_zero = zero_point_required();
  const std::pair<const at::Tensor*, const char*> required[] = {
      {&weight_qdata, "_weight_qdata"}, {&weight_scale, "_weight_scale"},
      {&weight_zero_point, need_zero ? "_weight_zero_point" : nullptr}};
  for (const auto& [t, local] : required) {
    if (local == nullptr || Loaded(*t)) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint has no tensor '", name, ".", local, "' (nor torchao 0.14's '", name,
        ".weight:", std::string(local).substr(8), "'); torchao ", subclass_name(), " needs it"));
  }
  if (!Loaded(weight_zero_point)) {
    // Int8Tensor without zero_point: symmetric, zeros.
    weight_zero_point = at::zeros(weight_scale.sizes(),
                                  at::TensorOptions().dtype(at::kChar).device(target.device));
  }
  QS_RETURN_IF_ERROR(CheckContents(name));
  weight = weight_qdata;
  return PackForKernels(target);
}

absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>>
TorchAoLinearBase::SerializedTensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out = {
      {"_weight_qdata", Resident(weight_qdata)},
      {"_weight_scale", weight_scale},
      {"_weight_zero_point", weight_zero_point}};
  if (bias.defined()) out.emplace_back("bias", bias);
  return out;
}

namespace {

// DATA_LOSS naming `tensor` at its first element where `bad` holds.
absl::Status FirstBad(const at::Tensor& values, const at::Tensor& bad, const std::string& tensor,
                      const std::string& rule) {
  at::Tensor idx = bad.reshape({-1}).nonzero();
  if (idx.numel() == 0) return absl::OkStatus();
  const int64_t i = idx[0].item<int64_t>();
  return absl::DataLossError(absl::StrCat("tensor '", tensor, "' has value ",
                                          values.reshape({-1})[i].item<double>(),
                                          " at flat index ", i, "; ", rule));
}

}  // namespace

TorchAoInt4Linear::TorchAoInt4Linear(const models::LinearOptions& options,
                                     const TorchAoSchemeConfig& config, bool prequantized)
    : TorchAoLinearBase(options, prequantized), group_size_(config.group_size) {
  const int64_t n = options.out_features;
  const int64_t k = options.in_features;
  weight_qdata = models::MetaTensor({n, k / 2}, at::kChar);
  weight_scale = models::MetaTensor({k / group_size_, n}, options.dtype);
  weight_zero_point = models::MetaTensor({k / group_size_, n}, options.dtype);
  RegisterState();
}

nlohmann::ordered_json TorchAoInt4Linear::MetadataJson() const {
  nlohmann::ordered_json data;
  data["activation_dtype"] = DtypeJson(c10::ScalarType::BFloat16);  // Int4Tensor's default
  data["block_size"] = {1, group_size_};
  data["shape"] = {options().out_features, options().in_features};
  return {{"_type", subclass_name()},
          {"_data", data},
          {"_tensor_data_names", {"qdata", "scale", "zero_point"}}};
}

absl::Status TorchAoInt4Linear::CheckContents(const std::string& name) const {
  const at::Tensor s = weight_scale.to(at::kFloat);
  QS_RETURN_IF_ERROR(FirstBad(s, at::logical_not(at::isfinite(s)), name + "._weight_scale",
                              "Int4Tensor scales are finite"));
  const at::Tensor z = weight_zero_point.to(at::kFloat);
  return FirstBad(z, at::logical_not(at::isfinite(z)), name + "._weight_zero_point",
                  "Int4Tensor zero points are finite");
}

absl::Status TorchAoInt4Linear::QuantizeWeight(const at::Tensor& w, const LoadTarget& target) {
  // transformers materializes the checkpoint weight in the model dtype before quantize_.
  auto s = torchao::QuantizeInt4Plain(w.to(options().dtype), group_size_);
  if (!s.ok()) return s.status();
  weight_qdata = s->qdata.to(target.device);
  weight_scale = s->scale.to(target.device);
  weight_zero_point = s->zero_point.to(target.device);
  weight = weight_qdata;
  return PackForKernels(target);
}

absl::Status TorchAoInt4Linear::PackForKernels(const LoadTarget& target) {
  if (!KernelsEnabled() || !target.device.is_cpu()) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<kernels::PackedWeight>> packed;
  QS_RETURN_IF_ERROR(common::TorchCall("torchao int4: packing for the CPU kernel", [&] {
    // Signed codes q in [-8, 7]: q * s + z = (q + 8) * s + (z - 8 s).
    const at::Tensor s = weight_scale.to(at::kFloat).t().contiguous();
    kernels::Lut4Weight w;
    w.codes = (torchao::UnpackInt4(weight_qdata) + 8).to(at::kByte).contiguous();
    for (int i = 0; i < 16; ++i) w.lut[i] = static_cast<float>(i);
    w.scale = s;
    w.offset = (weight_zero_point.to(at::kFloat).t() - 8 * s).contiguous();
    w.group_size = group_size_;
    w.compute_dtype = options().dtype;
    w.activation_bits = options().activation_bits;
    packed = kernels::PackLut4(w, target.device);
  }));
  if (!packed.ok()) return packed.status();
  SetPackedWeight(*std::move(packed));
  // One resident copy: _weight_qdata (and the float input slot aliasing it) is rebuilt from
  // the kernel's codes, q + 8, when Save or Dequantize needs it.
  return common::TorchCall("torchao int4: dropping the serialized codes", [&] {
    const CodesRebuild rebuild = [](const at::Tensor& codes) {
      return torchao::PackInt4(codes.to(at::kChar) - 8);
    };
    ReleaseToPacked(&weight_qdata, rebuild, {&weight});
  });
}

at::Tensor TorchAoInt4Linear::Dequantize() const {
  return torchao::DequantizeInt4Plain({Resident(weight_qdata), weight_scale, weight_zero_point},
                                      group_size_, options().dtype);
}

TorchAoInt8Linear::TorchAoInt8Linear(const models::LinearOptions& options,
                                     const TorchAoSchemeConfig& config, bool prequantized)
    : TorchAoLinearBase(options, prequantized), config_(config) {
  const int64_t n = options.out_features;
  const int64_t k = options.in_features;
  std::tie(block_rows_, block_cols_) = config.weight_granularity.BlockSize(n, k);
  weight_qdata = models::MetaTensor({n, k}, at::kChar);
  weight_scale = models::MetaTensor({n / block_rows_, k / block_cols_}, at::kFloat);
  weight_zero_point = models::MetaTensor({n / block_rows_, k / block_cols_}, at::kChar);
  RegisterState();
}

nlohmann::ordered_json TorchAoInt8Linear::MetadataJson() const {
  nlohmann::ordered_json act = nullptr;
  if (config_.scheme == TorchAoScheme::kInt8DynamicActivationInt8Weight) {
    nlohmann::ordered_json kwargs;
    kwargs["granularity"] = GranularityJson(config_.act_granularity);
    kwargs["mapping_type"] = {{"_type", "MappingType"},
                              {"_data", config_.act_symmetric ? "SYMMETRIC" : "ASYMMETRIC"}};
    kwargs["reduce_range"] = config_.reduce_range;
    act = {{"_type", "QuantizeTensorToInt8Kwargs"}, {"_data", kwargs}};
  }
  nlohmann::ordered_json data;
  data["act_quant_kwargs"] = act;
  data["reduce_range"] = config_.reduce_range;
  data["block_size"] = {block_rows_, block_cols_};
  data["dtype"] = DtypeJson(options().dtype);
  return {{"_type", subclass_name()},
          {"_data", data},
          {"_tensor_data_names", {"zero_point", "qdata", "scale"}}};
}

absl::Status TorchAoInt8Linear::CheckContents(const std::string& name) const {
  // Int8Tensor.from_hp clamps scales at float32 eps and quantizes weights symmetrically.
  const at::Tensor s = weight_scale.to(at::kFloat);
  QS_RETURN_IF_ERROR(FirstBad(s, at::logical_or(at::logical_not(at::isfinite(s)), at::le(s, 0)),
                              name + "._weight_scale",
                              "Int8Tensor scales are finite and positive"));
  const at::Tensor z = weight_zero_point.to(at::kInt);
  QS_RETURN_IF_ERROR(FirstBad(z, at::ne(z, 0), name + "._weight_zero_point",
                              "Int8Tensor weights are symmetric (zero points 0)"));
  if (config_.reduce_range) {
    const at::Tensor q = weight_qdata.to(at::kInt);
    QS_RETURN_IF_ERROR(FirstBad(q, at::logical_or(at::lt(q, -64), at::gt(q, 63)),
                                name + "._weight_qdata", "reduce_range codes are in [-64, 63]"));
  }
  return absl::OkStatus();
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
  return PackForKernels(target);
}

absl::Status TorchAoInt8Linear::PackForKernels(const LoadTarget& target) {
  // Weight-only with one scale per row or per tensor (zero points are checked to be 0).
  if (!KernelsEnabled() || !target.device.is_cpu() ||
      config_.scheme == TorchAoScheme::kInt8DynamicActivationInt8Weight ||
      block_cols_ != options().in_features) {
    return absl::OkStatus();
  }
  const int64_t n = options().out_features;
  absl::StatusOr<std::unique_ptr<kernels::PackedWeight>> packed;
  QS_RETURN_IF_ERROR(common::TorchCall("torchao int8: packing for the CPU kernel", [&] {
    // [N / block_rows, 1] scales, one per block of rows.
    const at::Tensor s = weight_scale.to(at::kFloat).reshape({-1, 1}).expand({-1, block_rows_});
    packed = kernels::PackInt8Rowwise({weight_qdata.contiguous(), s.reshape({n}).contiguous(), options().dtype},
                                      target.device);
  }));
  if (!packed.ok()) return packed.status();
  SetPackedWeight(*std::move(packed));
  return absl::OkStatus();
}

at::Tensor TorchAoInt8Linear::Dequantize() const {
  // Int8Tensor.dequantize(): output dtype = the dtype of the weight it was made from.
  return torchao::DequantizeInt8({weight_qdata, weight_scale, weight_zero_point}, options().dtype);
}

std::string TorchAoInt8Linear::kernel_name() const {
  if (packed_weight() != nullptr) return packed_weight()->name();
  if (config_.scheme == TorchAoScheme::kInt8DynamicActivationInt8Weight) {
    return "int_mm_w8a8_rowwise";
  }
  return block_cols_ == options().in_features ? "mm_w8_rowscale" : "dequantize_linear_ref";
}

at::Tensor TorchAoInt8Linear::Forward(const at::Tensor& x) const {
  if (packed_weight() != nullptr) return QuantizedLinear::Forward(x);
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
