#include "quant/methods/compressed_tensors/compressed_tensors_linear.h"

#include <ATen/ATen.h>

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/torch_status.h"
#include "quant/bit_packing.h"
#include "quant/kernels/packed_weight.h"

namespace quantserve::quant {
namespace {

using Args = CompressedTensorsConfig::QuantizationArgs;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool IsFp8(const Args& a) { return a.type == "float" && a.num_bits == 8; }

// QuantizationArgs.pytorch_dtype().
c10::ScalarType CodeDtype(const Args& a) {
  if (a.type == "float") return at::kFloat8_e4m3fn;
  if (a.num_bits <= 8) return at::kChar;
  if (a.num_bits <= 16) return at::kShort;
  return at::kInt;
}

// The zero-point dtype: zp_dtype when given, else pytorch_dtype() (quant_args.py).
absl::StatusOr<c10::ScalarType> ZeroPointDtype(const Args& a) {
  if (!a.zp_dtype) return CodeDtype(a);
  const std::string& d = *a.zp_dtype;
  if (d == "torch.int8") return at::kChar;
  if (d == "torch.int16") return at::kShort;
  if (d == "torch.int32") return at::kInt;
  if (d == "torch.float8_e4m3fn") return at::kFloat8_e4m3fn;
  if (d == "torch.float16") return at::kHalf;
  if (d == "torch.bfloat16") return at::kBFloat16;
  if (d == "torch.float32") return at::kFloat;
  return absl::UnimplementedError("compressed-tensors zp_dtype " + d + " is not supported");
}

// calculate_range: int [-2^(b-1), 2^(b-1)-1], fp8 e4m3 [-448, 448].
std::pair<double, double> QuantRange(const Args& a) {
  if (a.type == "float") return {-448.0, 448.0};
  const double half = std::ldexp(1.0, static_cast<int>(a.num_bits) - 1);
  return {-half, half - 1};
}

// initialize_qparams: the scale / zero-point shape of `a` observing `rows` x `cols`.
std::vector<int64_t> QParamShape(const Args& a, int64_t rows, int64_t cols) {
  if (a.strategy == "channel") return {rows, 1};
  if (a.strategy == "group") return {rows, CeilDiv(cols, *a.group_size)};
  if (a.strategy == "block") {
    return {CeilDiv(rows, (*a.block_structure)[0]), CeilDiv(cols, (*a.block_structure)[1])};
  }
  return {1};  // tensor
}

// initialize_qparams: the observed dtype, or float16 when it is not a float type.
c10::ScalarType ScaleDtype(c10::ScalarType compute) {
  switch (compute) {
    case at::kHalf:
    case at::kBFloat16:
    case at::kFloat:
    case at::kDouble:
      return compute;
    default:
      return at::kHalf;
  }
}

// unpack_from_int32: `cols` b-bit fields per row of `packed` [rows, words], element i at bit
// i*b of the row's little-endian bit stream (fields may straddle words), minus 2^(b-1).
at::Tensor UnpackRows(const at::Tensor& packed, int64_t bits, int64_t cols) {
  const int64_t rows = packed.size(0);
  at::Tensor p = at::cat({packed.to(at::kLong).bitwise_and(0xFFFFFFFFLL),
                          at::zeros({rows, 1}, at::kLong)},
                         1);
  at::Tensor bit = at::arange(cols, at::kLong) * bits;
  at::Tensor word = at::floor_divide(bit, 32);
  at::Tensor off = at::remainder(bit, 32);
  at::Tensor lo = p.index_select(1, word).bitwise_right_shift(off);
  at::Tensor hi = p.index_select(1, word + 1).bitwise_left_shift(32 - off);
  at::Tensor v = lo.bitwise_or(hi).bitwise_and((int64_t{1} << bits) - 1);
  return (v - (int64_t{1} << (bits - 1))).to(at::kChar);
}

// `t` [a, b] (a per-strategy scale or zero point) broadcast to the weight's [rows, cols].
at::Tensor ExpandToWeight(const at::Tensor& t, const Args& a, int64_t rows, int64_t cols) {
  if (a.strategy == "group") return t.repeat_interleave(*a.group_size, 1).narrow(1, 0, cols);
  if (a.strategy == "block") {
    return t.repeat_interleave((*a.block_structure)[0], 0)
        .repeat_interleave((*a.block_structure)[1], 1)
        .narrow(0, 0, rows)
        .narrow(1, 0, cols);
  }
  return t;  // tensor [1] and channel [N, 1] broadcast
}

// round_to_quantized_type_args: clamp, then RNE for int or a cast through float8_e4m3fn.
at::Tensor RoundToType(const at::Tensor& x, const Args& a) {
  const auto [lo, hi] = QuantRange(a);
  at::Tensor c = at::clamp(x, at::scalar_tensor(lo, at::kFloat), at::scalar_tensor(hi, at::kFloat));
  if (IsFp8(a)) return c.to(at::kFloat8_e4m3fn).to(x.scalar_type());
  return at::round(c);
}

// _get_dtype_eps.
double DtypeEps(c10::ScalarType t) {
  switch (t) {
    case at::kFloat8_e4m3fn:
      return 0.125;
    case at::kHalf:
      return 0.0009765625;
    case at::kBFloat16:
      return 0.0078125;
    case at::kFloat:
      return std::numeric_limits<float>::epsilon();
    case at::kDouble:
      return std::numeric_limits<double>::epsilon();
    default:
      return 1;
  }
}

at::ScalarType TorchDtypeOf(const std::string& name) {
  if (name == "torch.float16") return at::kHalf;
  if (name == "torch.bfloat16") return at::kBFloat16;
  if (name == "torch.float8_e4m3fn") return at::kFloat8_e4m3fn;
  if (name == "torch.float64") return at::kDouble;
  return at::kFloat;
}

// calculate_qparams for dynamic activations: (scale, zero point) from min / max.
std::pair<at::Tensor, at::Tensor> CalculateQParams(at::Tensor lo, at::Tensor hi, const Args& a,
                                                   c10::ScalarType zp_dtype) {
  lo = at::minimum(lo, at::zeros_like(lo));
  hi = at::maximum(hi, at::zeros_like(hi));
  const auto [qmin, qmax] = QuantRange(a);
  // bit_range is a float32 tensor in the library (q_max - q_min).
  const at::Tensor range = at::scalar_tensor(qmax, at::kFloat) - at::scalar_tensor(qmin, at::kFloat);
  at::Tensor scale;
  at::Tensor zp;
  if (a.symmetric) {
    at::Tensor m = at::maximum(lo.abs(), hi.abs());
    scale = m / (range.to(m.scalar_type()) / 2);
    zp = at::zeros(scale.sizes(), lo.options());
  } else {
    scale = (hi - lo) / range.to(hi.scalar_type());
    zp = at::clamp(at::scalar_tensor(qmin, at::kFloat) - lo / scale,
                   at::scalar_tensor(qmin, at::kFloat), at::scalar_tensor(qmax, at::kFloat));
  }
  c10::ScalarType eps_dtype = scale.scalar_type();
  if (a.scale_dtype) {
    eps_dtype = TorchDtypeOf(*a.scale_dtype);
    // round_to_quantized_type_dtype (floats: clamp to finfo, cast, cast back).
    const double fmax = eps_dtype == at::kFloat8_e4m3fn ? 448.0
                        : eps_dtype == at::kHalf        ? 65504.0
                        : eps_dtype == at::kBFloat16    ? 3.3895313892515355e38
                                                        : std::numeric_limits<float>::max();
    scale = at::clamp(scale, -fmax, fmax).to(eps_dtype).to(scale.scalar_type());
  }
  scale = at::where(scale == 0, at::scalar_tensor(DtypeEps(eps_dtype), scale.options()), scale);
  if (at::isIntegralType(zp_dtype, /*includeBool=*/false)) {
    const double zlo = zp_dtype == at::kChar ? -128.0 : zp_dtype == at::kShort ? -32768.0 : -2147483648.0;
    const double zhi = zp_dtype == at::kChar ? 127.0 : zp_dtype == at::kShort ? 32767.0 : 2147483647.0;
    zp = at::round(at::clamp(zp, zlo, zhi)).to(zp_dtype);
  } else {
    zp = at::clamp(zp, -448.0, 448.0).to(zp_dtype);
  }
  if (scale.dim() == 0) {
    scale = scale.reshape({1});
    zp = zp.reshape({1});
  }
  return {scale, zp};
}

// _quantize_dequantize (x / scale [+ zp], round to type, [- zp], * scale) in the shape the
// library broadcasts with.
at::Tensor QuantizeDequantize(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zp,
                              const Args& a) {
  at::Tensor scaled = x / scale;
  if (zp.defined()) scaled = scaled + zp.to(x.scalar_type());
  at::Tensor q = RoundToType(scaled, a).to(scale.scalar_type());
  if (zp.defined()) q = q - zp.to(scale.scalar_type());
  return q * scale;
}

absl::Status Unsupported(const std::string& name, const std::string& what) {
  return absl::UnimplementedError(
      absl::StrCat("compressed-tensors module ", name, ": ", what, " is not supported"));
}

std::string Shape(const at::Tensor& t) { return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]"); }

}  // namespace

CompressedTensorsLinear::CompressedTensorsLinear(const models::LinearOptions& linear,
                                                 CompressedTensorsLinearOptions ct)
    : QuantizedLinear(linear), ct_(std::move(ct)) {}

absl::StatusOr<std::shared_ptr<CompressedTensorsLinear>> CompressedTensorsLinear::Create(
    const std::string& name, const models::LinearOptions& linear,
    CompressedTensorsLinearOptions options) {
  const auto& s = options.scheme;
  if (!s.weights) return Unsupported(name, "a scheme without weights");
  const Args& w = *s.weights;
  if (s.output_activations) return Unsupported(name, "output activation quantization");
  if (w.is_dynamic()) return Unsupported(name, "dynamic weight quantization");
  if (w.strategy != "tensor" && w.strategy != "channel" && w.strategy != "group" &&
      w.strategy != "block") {
    return Unsupported(name, "weight strategy \"" + w.strategy + "\"");
  }
  if (w.type == "float" && w.num_bits != 8) {
    return Unsupported(name, absl::StrCat("float", w.num_bits, " weights"));
  }
  if (w.type == "int" && (w.num_bits < 1 || w.num_bits > 32)) {
    return Unsupported(name, absl::StrCat("int", w.num_bits, " weights"));
  }
  const std::string& f = options.format;
  if (f == "pack-quantized") {
    if (w.type != "int" || w.num_bits > 8) {
      return Unsupported(name, "pack-quantized with weights other than int1..int8");
    }
  } else if (f != "int-quantized" && f != "float-quantized" && f != "naive-quantized") {
    return Unsupported(name, "compression format \"" + f + "\"");
  }
  if (w.strategy == "group" && linear.in_features % *w.group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "compressed-tensors module ", name, ": in_features ", linear.in_features,
        " is not a multiple of group_size ", *w.group_size,
        " (compressed-tensors requires divisible columns)"));
  }
  if (s.input_activations) {
    const Args& a = *s.input_activations;
    if (a.type == "float" && a.num_bits != 8) {
      return Unsupported(name, absl::StrCat("float", a.num_bits, " input activations"));
    }
    if (a.dynamic == "local" || a.strategy == "tensor_group" || a.strategy == "attn_head") {
      return Unsupported(name, "input activations with strategy \"" + a.strategy + "\"");
    }
    if (!a.is_dynamic() && a.strategy != "tensor") {
      return Unsupported(name, "static input activations with strategy \"" + a.strategy + "\"");
    }
    if (a.strategy == "group" && linear.in_features % *a.group_size != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "compressed-tensors module ", name, ": in_features ", linear.in_features,
          " is not a multiple of the input activations' group_size ", *a.group_size));
    }
    QS_RETURN_IF_ERROR(ZeroPointDtype(a).status());
  }
  QS_ASSIGN_OR_RETURN(const c10::ScalarType zp_dtype, ZeroPointDtype(w));

  // Copied: `s`, `w` and `f` keep referring to `options`.
  auto m = std::shared_ptr<CompressedTensorsLinear>(new CompressedTensorsLinear(linear, options));
  const int64_t n = linear.out_features;
  const int64_t k = linear.in_features;
  const c10::ScalarType scale_dtype = ScaleDtype(linear.dtype);
  const std::vector<int64_t> qshape = QParamShape(w, n, k);
  if (f == "pack-quantized") {
    m->weight_packed = models::MetaTensor({n, CeilDiv(k * w.num_bits, 32)}, at::kInt);
    m->RegisterParameter("weight_packed", &m->weight_packed);
    m->weight_shape = models::MetaTensor({2}, at::kLong);
    m->RegisterParameter("weight_shape", &m->weight_shape);
  } else {
    m->weight = models::MetaTensor({n, k}, CodeDtype(w));
    m->RegisterParameter("weight", &m->weight);
  }
  m->weight_scale = models::MetaTensor(qshape, scale_dtype);
  m->RegisterParameter("weight_scale", &m->weight_scale);
  if (!w.symmetric) {
    const bool packed = f == "pack-quantized" && (w.strategy == "group" || w.strategy == "channel");
    m->weight_zero_point =
        packed ? models::MetaTensor({CeilDiv(n * w.num_bits, 32), qshape[1]}, at::kInt)
               : models::MetaTensor(qshape, zp_dtype);
    m->RegisterParameter("weight_zero_point", &m->weight_zero_point);
  }
  if (s.input_activations && !s.input_activations->is_dynamic()) {
    const Args& a = *s.input_activations;
    m->input_scale = models::MetaTensor({1}, scale_dtype);
    m->RegisterParameter("input_scale", &m->input_scale);
    if (!a.symmetric) {
      QS_ASSIGN_OR_RETURN(const c10::ScalarType azp, ZeroPointDtype(a));
      m->input_zero_point = models::MetaTensor({1}, azp);
      m->RegisterParameter("input_zero_point", &m->input_zero_point);
    }
  }
  m->RegisterBias();
  m->RegisterRuntimeTensor(&m->codes_);
  m->RegisterRuntimeTensor(&m->zero_);
  return m;
}

std::string CompressedTensorsLinear::what() const {
  const Args& w = *ct_.scheme.weights;
  std::string s = absl::StrCat("compressed-tensors ", ct_.format, " ", w.type, w.num_bits, " ",
                               w.strategy);
  if (w.strategy == "group") absl::StrAppend(&s, " ", *w.group_size);
  if (!w.symmetric) absl::StrAppend(&s, " asymmetric");
  return s;
}

std::string CompressedTensorsLinear::kernel_name() const {
  if (packed_weight() != nullptr) return packed_weight()->name();
  const bool act = ct_.scheme.input_activations.has_value() && !ct_.dequantize;
  return act ? "dequantize_linear_fake_quant_input_ref" : "dequantize_linear_ref";
}

absl::Status CompressedTensorsLinear::QuantizeWeight(const at::Tensor&, const LoadTarget&) {
  return absl::FailedPreconditionError(
      "compressed-tensors weights are quantized offline (llm-compressor); load a pre-quantized "
      "checkpoint");
}

absl::Status CompressedTensorsLinear::LoadSerializedTensor(const std::string& local,
                                                           const std::string& full_name,
                                                           const at::Tensor& value,
                                                           const LoadTarget& target) {
  if (local == "weight_shape" && weight_shape.defined()) {
    // torch.tensor(weight.shape) is int64; older writers used int32.
    if (value.dim() != 1 || value.size(0) != 2 ||
        (value.scalar_type() != at::kLong && value.scalar_type() != at::kInt)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", full_name, "' is ", c10::toString(value.scalar_type()), " ", Shape(value),
          " but ", what(), " expects int64 (or int32) [2]"));
    }
    weight_shape = value.to(target.device, value.scalar_type(), false, /*copy=*/true);
    return absl::OkStatus();
  }
  for (const auto& p : NamedParameters()) {
    if (p.name != local) continue;
    const at::Tensor& slot = *p.slot.tensor;
    // Scales convert between float dtypes (transformers copies into the model's params);
    // codes and zero points must match exactly.
    const bool is_scale = local == "weight_scale" || local == "input_scale" || local == "bias";
    if (!is_scale || !at::isFloatingType(value.scalar_type()) ||
        c10::elementSize(value.scalar_type()) == 1) {
      QS_RETURN_IF_ERROR(ExpectTensor(full_name, value, slot.sizes(), slot.scalar_type(), what()));
    }
    break;
  }
  return QuantizedLinear::LoadSerializedTensor(local, full_name, value, target);
}

absl::Status CompressedTensorsLinear::FinishSerializedLoad(const std::string& name,
                                                           const LoadTarget& target) {
  const Args& w = *ct_.scheme.weights;
  const int64_t n = options().out_features;
  const int64_t k = options().in_features;
  const auto [qmin, qmax] = QuantRange(w);
  if (ct_.format == "pack-quantized") {
    at::Tensor shape = weight_shape.to(at::kCPU, at::kLong);
    const int64_t sn = shape[0].item<int64_t>();
    const int64_t sk = shape[1].item<int64_t>();
    if (sn != n || sk != k) {
      return absl::DataLossError(absl::StrCat("tensor '", name, ".weight_shape' holds [", sn,
                                              ", ", sk, "] but the module is [", n, ", ", k,
                                              "] (", what(), ")"));
    }
    codes_ = UnpackRows(weight_packed.to(at::kCPU), w.num_bits, k).to(target.device);
  } else {
    codes_ = weight;
    if (w.type == "int" && w.num_bits < static_cast<int64_t>(c10::elementSize(weight.scalar_type()) * 8)) {
      at::Tensor bad = (weight < qmin).logical_or(weight > qmax);
      if (bad.any().item<bool>()) {
        const int64_t v = weight.masked_select(bad)[0].item<int64_t>();
        return absl::DataLossError(absl::StrCat("tensor '", name, ".weight' holds ", v,
                                                ", outside the int", w.num_bits, " range [",
                                                qmin, ", ", qmax, "] (", what(), ")"));
      }
    }
  }
  if (!w.symmetric) {
    if (weight_zero_point.scalar_type() == at::kInt && ct_.format == "pack-quantized" &&
        (w.strategy == "group" || w.strategy == "channel")) {
      // Packed along N: transpose, unpack, transpose back (values always in range).
      zero_ = UnpackRows(weight_zero_point.to(at::kCPU).t().contiguous(), w.num_bits, n)
                  .t()
                  .contiguous()
                  .to(target.device);
    } else {
      zero_ = weight_zero_point;
      if (w.type == "int") {
        at::Tensor bad = (zero_ < qmin).logical_or(zero_ > qmax);
        if (bad.any().item<bool>()) {
          const int64_t v = zero_.masked_select(bad)[0].item<int64_t>();
          return absl::DataLossError(absl::StrCat(
              "tensor '", name, ".weight_zero_point' holds ", v, ", outside the int", w.num_bits,
              " range [", qmin, ", ", qmax, "] (", what(), ")"));
        }
      }
    }
  }
  for (const auto& [local, t] : {std::pair<const char*, const at::Tensor*>{"weight_scale", &weight_scale},
                                 {"input_scale", &input_scale}}) {
    if (!t->defined() || t->is_meta()) continue;
    if (!at::isfinite(*t).all().item<bool>()) {
      return absl::DataLossError(absl::StrCat("tensor '", name, ".", local,
                                              "' holds a non-finite scale (", what(), ")"));
    }
  }
  if (target.device.is_cpu() && KernelsEnabled()) {
    QS_RETURN_IF_ERROR(PackForCpu(name, target.device));
  }
  return absl::OkStatus();
}

absl::Status CompressedTensorsLinear::PackForCpu(const std::string& name,
                                                 const c10::Device& device) {
  const Args& w = *ct_.scheme.weights;
  const bool weight_only = !ct_.scheme.input_activations || ct_.dequantize;
  if (!weight_only || w.type != "int" || w.strategy == "block") return absl::OkStatus();
  const int64_t n = options().out_features;
  const int64_t k = options().in_features;
  // Per-row groups [N, K / G]: tensor [1] and channel [N, 1] are one group per row.
  const auto per_row = [&](const at::Tensor& t) {
    return t.cpu().to(at::kFloat).expand({n, t.dim() == 2 ? t.size(1) : 1}).contiguous();
  };
  absl::StatusOr<std::unique_ptr<kernels::PackedWeight>> packed;
  if (w.num_bits == 4) {
    kernels::Lut4Weight lw;
    lw.codes = (codes_.cpu().to(at::kShort) + 8).to(at::kByte).contiguous();  // 0..15
    for (int i = 0; i < 16; ++i) lw.lut[static_cast<size_t>(i)] = static_cast<float>(i);
    lw.scale = per_row(weight_scale);
    at::Tensor shift = at::full({1, 1}, 8.0f);
    if (zero_.defined()) shift = per_row(zero_) + 8.0f;
    lw.offset = (shift * lw.scale).neg().contiguous();
    lw.group_size = w.strategy == "group" ? *w.group_size : k;
    lw.compute_dtype = options().dtype;
    lw.activation_bits = options().activation_bits;
    packed = kernels::PackLut4(lw, device);
  } else if (w.num_bits == 8 && w.symmetric &&
             (w.strategy == "channel" || w.strategy == "tensor")) {
    kernels::Int8RowwiseWeight iw;
    iw.codes = codes_.cpu().contiguous();
    iw.scale = per_row(weight_scale).reshape({n});
    iw.compute_dtype = options().dtype;
    packed = kernels::PackInt8Rowwise(iw, device);
  } else {
    return absl::OkStatus();
  }
  if (!packed.ok()) {
    return common::Annotate(packed.status(), absl::StrCat("packing ", name, " (", what(), ")"));
  }
  SetPackedWeight(std::move(*packed));
  // Unpacked codes are the forward's alone; int-quantized codes are `weight` itself.
  if (ct_.format == "pack-quantized") codes_ = at::Tensor();
  if (w.num_bits != 4) return absl::OkStatus();  // the int8 kernel reads the codes in place
  // One resident copy: the serialized 4-bit codes are rebuilt from the kernel's (code + 8)
  // when Save or Dequantize needs them.
  return common::TorchCall("compressed-tensors: dropping the serialized codes", [&] {
    if (ct_.format == "pack-quantized") {
      // The inverse of UnpackRows for 4 bits: the kernel's codes are the fields (code + 8).
      ReleaseToPacked(&weight_packed, PackNibblesToInt32);
    } else if (weight.is_same(codes_)) {
      codes_ = at::Tensor();
      if (!ReleaseToPacked(&weight, [dtype = weight.scalar_type()](const at::Tensor& codes) {
            return (codes.to(at::kShort) - 8).to(dtype);
          })) {
        codes_ = weight;
      }
    }
  });
}

at::Tensor CompressedTensorsLinear::Codes() const {
  if (codes_.defined()) return codes_;
  if (ct_.format != "pack-quantized") return Resident(weight);
  const at::Tensor packed = Resident(weight_packed);
  return UnpackRows(packed.to(at::kCPU), ct_.scheme.weights->num_bits, options().in_features)
      .to(packed.device());
}

at::Tensor CompressedTensorsLinear::Dequantize() const {
  // decompress -> dequantize(): x_q.to(scale.dtype) [- zp.to(scale.dtype)] * scale.
  const Args& w = *ct_.scheme.weights;
  const int64_t n = options().out_features;
  const int64_t k = options().in_features;
  at::Tensor d = Codes().to(weight_scale.scalar_type());
  if (zero_.defined()) {
    d = d - ExpandToWeight(zero_, w, n, k).to(weight_scale.scalar_type());
  }
  d = d * ExpandToWeight(weight_scale, w, n, k);
  return d.to(options().dtype);
}

at::Tensor CompressedTensorsLinear::QuantizeInput(const at::Tensor& x) const {
  if (!ct_.scheme.input_activations || ct_.dequantize || x.numel() == 0) return x;
  const Args& a = *ct_.scheme.input_activations;
  if (!a.is_dynamic()) {
    return QuantizeDequantize(x, input_scale,
                              input_zero_point.defined() ? input_zero_point : at::Tensor(), a);
  }
  const c10::ScalarType zp_dtype = *ZeroPointDtype(a);
  if (a.strategy == "group") {
    const int64_t g = *a.group_size;
    at::Tensor xg = x.unflatten(-1, {x.size(-1) / g, g});
    auto [scale, zp] = CalculateQParams(xg.amin(-1), xg.amax(-1), a, zp_dtype);
    return QuantizeDequantize(xg, scale.unsqueeze(-1), zp.unsqueeze(-1), a)
        .flatten(-2)
        .to(x.scalar_type());
  }
  if (a.strategy == "tensor") {
    auto [lo, hi] = at::aminmax(x);
    auto [scale, zp] = CalculateQParams(lo, hi, a, zp_dtype);
    return QuantizeDequantize(x, scale, zp, a);
  }
  // token: reduce every dim but the first two (the model's activations are [B, T, K]).
  auto [scale, zp] = CalculateQParams(x.amin(-1, true), x.amax(-1, true), a, zp_dtype);
  return QuantizeDequantize(x, scale, zp, a);
}

at::Tensor CompressedTensorsLinear::Forward(const at::Tensor& x) const {
  if (packed_weight() != nullptr) {  // weight-only: no input quantization
    at::Tensor out = packed_weight()->Matmul(x);
    return bias.defined() ? out + bias.to(out.scalar_type()) : out;
  }
  at::Tensor xq = QuantizeInput(x);
  at::Tensor w = Dequantize().to(xq.scalar_type());
  return at::linear(xq, w,
                    bias.defined() ? std::optional<at::Tensor>(bias.to(xq.scalar_type()))
                                   : std::nullopt);
}

}  // namespace quantserve::quant
