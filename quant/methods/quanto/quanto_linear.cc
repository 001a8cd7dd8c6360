#include "quant/methods/quanto/quanto_linear.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/torch_status.h"

namespace quantserve::quant {
namespace {

constexpr std::array<QuantoQType, 4> kQTypes = {{
    {"int8", 8, false, c10::ScalarType::Char, 127},
    {"float8", 8, true, c10::ScalarType::Float8_e4m3fn, 448},
    {"int4", 4, false, c10::ScalarType::Byte, 15},
    {"int2", 2, false, c10::ScalarType::Byte, 3},
}};

// Calibration's momentum (Calibration(momentum=0.9) and calibrate_input's default).
constexpr double kMomentum = 0.9;

// quanto::quantize_symmetric: base / scale, rounded for integers, clamped to the dtype's range.
at::Tensor QuantizeSymmetric(const at::Tensor& base, const QuantoQType& q,
                             const at::Tensor& scale) {
  at::Tensor data = at::div(base, scale);
  if (q.is_floating_point) {
    // finfo(float8_e4m3fn).min/max are Python floats.
    return at::clamp(data, -static_cast<double>(q.qmax), static_cast<double>(q.qmax)).to(q.storage);
  }
  return at::clamp(at::round(data), -q.qmax - 1, q.qmax).to(q.storage);
}

// calibrate.py's absmax_scale (per tensor): max|t| / dtype_info(dtype).max.
at::Tensor AbsmaxScale(const at::Tensor& t, const QuantoQType& q) {
  at::Tensor qranges = at::max(at::abs(t));
  return q.is_floating_point ? at::div(qranges, static_cast<double>(q.qmax))
                             : at::div(qranges, q.qmax);
}

// calibrate.py's _updated_scale.
at::Tensor UpdatedScale(const at::Tensor& scale, const at::Tensor& new_scale) {
  if (at::all(at::eq(scale, 1)).item<bool>()) return new_scale;
  return at::add(at::mul(scale, kMomentum), at::mul(new_scale, 1.0 - kMomentum));
}

}  // namespace

const QuantoQType* FindQuantoQType(const std::string& name) {
  for (const auto& q : kQTypes) {
    if (name == q.name) return &q;
  }
  return nullptr;
}

at::Tensor QuantoPackWeights(const at::Tensor& u, int bits) {
  const int64_t per_byte = 8 / bits;
  const int64_t n = u.size(0);
  const int64_t rows = (n + per_byte - 1) / per_byte;
  std::vector<int64_t> shape = u.sizes().vec();
  shape[0] = rows;
  at::Tensor packed = at::zeros(shape, u.options().dtype(at::kByte));
  at::Tensor codes = u.to(at::kByte);
  const int64_t chunks = std::min(per_byte, n / rows + 1);
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t start = i * rows;
    const int64_t end = std::min(start + rows, n);
    if (end <= start) continue;
    packed.narrow(0, 0, end - start)
        .bitwise_or_(at::bitwise_left_shift(codes.narrow(0, start, end - start), bits * i));
  }
  return packed;
}

at::Tensor QuantoUnpackWeights(const at::Tensor& packed, int bits, int64_t rows) {
  const int64_t per_byte = 8 / bits;
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < per_byte; ++i) {
    const int64_t mask = (int64_t{1} << (bits * (i + 1))) - 1;
    parts.push_back(at::bitwise_right_shift(at::bitwise_and(packed, mask), bits * i));
  }
  return at::cat(parts).to(at::kByte).narrow(0, 0, rows);
}

int64_t QuantoLinear::GroupSize(int64_t in_features) {
  int64_t group = 128;
  if (in_features <= group) return 0;
  while (in_features % group != 0 && group > 32) group -= 32;
  return in_features % group == 0 ? group : 0;
}

absl::StatusOr<std::shared_ptr<QuantoLinear>> QuantoLinear::Create(
    const QuantoLinearOptions& options) {
  if (options.weights == nullptr) {
    return absl::InvalidArgumentError("QuantoLinear needs a weights qtype");
  }
  if (options.activations != nullptr && options.activations->bits != 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quanto activations must be int8 or float8 (got ", options.activations->name, ")"));
  }
  if (options.linear.in_features <= 0 || options.linear.out_features <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("QuantoLinear needs a non-empty shape (got [",
                                                   options.linear.out_features, ", ",
                                                   options.linear.in_features, "])"));
  }
  return std::shared_ptr<QuantoLinear>(new QuantoLinear(options));
}

QuantoLinear::QuantoLinear(const QuantoLinearOptions& options)
    : QuantizedLinear(options.linear), quanto_(options) {
  const int64_t n = options_.out_features;
  const int64_t k = options_.in_features;
  const QuantoQType& w = *quanto_.weights;
  // Quantize at load: the float weight streams in and the state is derived from it; a
  // pre-quantized checkpoint carries the state itself.
  const bool pre = quanto_.prequantized;
  auto reg = [&](const char* name, at::Tensor* t) {
    if (pre) {
      RegisterParameter(name, t);
    } else {
      RegisterDerivedParameter(name, t);
    }
  };
  if (!pre) {
    weight = models::MetaTensor({n, k}, options_.dtype);
    RegisterParameter("weight", &weight);
  }
  if (w.bits == 8) {
    rows_ = n;
    data = models::MetaTensor({n, k}, w.storage);
    // One output row: SymmetricOptimizer quantizes per tensor (a 0-d scale).
    scale = n == 1 ? models::MetaTensor({}, options_.dtype)
                   : models::MetaTensor({n, 1}, options_.dtype);
    reg("weight._data", &data);
    reg("weight._scale", &scale);
  } else {
    group_size_ = GroupSize(k);
    rows_ = group_size_ > 0 ? n * k / group_size_ : n;
    const int64_t cols = group_size_ > 0 ? group_size_ : k;
    const int64_t per_byte = 8 / w.bits;
    data = models::MetaTensor({(rows_ + per_byte - 1) / per_byte, cols}, at::kByte);
    scale = models::MetaTensor({rows_, 1}, options_.dtype);
    shift = models::MetaTensor({rows_, 1}, options_.dtype);
    reg("weight._data._data", &data);
    reg("weight._scale", &scale);
    reg("weight._shift", &shift);
  }
  RegisterBias();
  // transformers' QuantoQuantize sets float32 ones (weight-only); optimum-quanto's own
  // quantize() (our activation path, and its save_pretrained) keeps them in the weight dtype.
  const c10::ScalarType scale_dtype =
      quanto_.activations != nullptr || pre ? options_.dtype : c10::ScalarType::Float;
  input_scale = models::MetaTensor({}, scale_dtype);
  output_scale = models::MetaTensor({}, scale_dtype);
  reg("input_scale", &input_scale);
  reg("output_scale", &output_scale);
}

absl::Status QuantoLinear::FinishSerializedLoad(const std::string& name,
                                                const LoadTarget& target) {
  const QuantoQType& q = *quanto_.weights;
  auto check = [&](const at::Tensor& t, const std::string& local, bool positive) -> absl::Status {
    at::Tensor f = t.to(at::kFloat).reshape({-1});
    at::Tensor bad = at::logical_not(at::isfinite(f));
    if (positive) bad = at::logical_or(bad, at::lt(f, 0));
    at::Tensor idx = bad.nonzero();
    if (idx.numel() == 0) return absl::OkStatus();
    const int64_t i = idx[0].item<int64_t>();
    return absl::DataLossError(absl::StrCat("tensor '", name, ".", local, "' has value ",
                                            f[i].item<double>(), " at flat index ", i,
                                            "; optimum-quanto ", q.name,
                                            positive ? " scales are finite and >= 0"
                                                     : " values are finite"));
  };
  QS_RETURN_IF_ERROR(check(scale, "weight._scale", true));
  if (q.bits != 8) QS_RETURN_IF_ERROR(check(shift, "weight._shift", false));
  if (q.is_floating_point) QS_RETURN_IF_ERROR(check(data, "weight._data", false));
  QS_RETURN_IF_ERROR(check(input_scale, "input_scale", true));
  QS_RETURN_IF_ERROR(check(output_scale, "output_scale", true));
  return PackForKernels(target);
}

absl::Status QuantoLinear::PackForKernels(const LoadTarget& target) {
  const QuantoQType& q = *quanto_.weights;
  if (!KernelsEnabled() || !target.device.is_cpu() || quanto_.activations != nullptr ||
      q.is_floating_point || (q.bits != 8 && q.bits != 4)) {
    return absl::OkStatus();
  }
  const int64_t n = options_.out_features;
  const int64_t k = options_.in_features;
  absl::StatusOr<std::unique_ptr<kernels::PackedWeight>> packed;
  QS_RETURN_IF_ERROR(common::TorchCall("quanto: packing for the CPU kernel", [&] {
    if (q.bits == 8) {
      kernels::Int8RowwiseWeight w;
      w.codes = data;
      w.scale = scale.to(at::kFloat).reshape({-1}).expand({n}).contiguous();
      w.compute_dtype = options().dtype;
      packed = kernels::PackInt8Rowwise(w, target.device);
    } else {
      const int64_t g = group_size_ > 0 ? group_size_ : k;
      kernels::Lut4Weight w;
      w.codes = QuantoUnpackWeights(data, q.bits, rows_).reshape({n, k}).contiguous();
      for (int i = 0; i < 16; ++i) w.lut[i] = static_cast<float>(i);
      w.scale = scale.to(at::kFloat).reshape({n, k / g}).contiguous();
      w.offset = shift.to(at::kFloat).neg().reshape({n, k / g}).contiguous();
      w.group_size = g;
      w.compute_dtype = options().dtype;
      w.activation_bits = options().activation_bits;
      packed = kernels::PackLut4(w, target.device);
    }
  }));
  if (!packed.ok()) return packed.status();
  SetPackedWeight(*std::move(packed));
  if (q.bits == 8) return absl::OkStatus();  // the kernel reads `data` itself: one copy already
  // One resident copy: the packed 4-bit `data` is rebuilt from the kernel's codes when Save or
  // Dequantize needs it.
  return common::TorchCall("quanto: dropping the serialized codes", [&] {
    ReleaseToPacked(&data, [bits = q.bits, rows = rows_](const at::Tensor& codes) {
      return QuantoPackWeights(codes.reshape({rows, -1}), bits);
    });
  });
}

absl::Status QuantoLinear::QuantizeWeight(const at::Tensor& value, const LoadTarget& target) {
  const QuantoQType& q = *quanto_.weights;
  // transformers loads the weight into the module's dtype before freeze() quantizes it. `w`
  // may alias the mapped checkpoint: only computed tensors are kept.
  const at::Tensor w = value.to(options_.dtype);
  at::Tensor new_data, new_scale, new_shift;
  if (q.bits == 8) {
    // AbsmaxOptimizer: amax(|w|) per row / qtype.qmax (a Python int for qint8, float for fp8).
    at::Tensor rmax = options_.out_features == 1 ? at::max(at::abs(w))
                                                 : at::amax(at::abs(w), {1}, /*keepdim=*/true);
    new_scale =
        q.is_floating_point ? at::div(rmax, static_cast<double>(q.qmax)) : at::div(rmax, q.qmax);
    if (q.is_floating_point) {
      at::Tensor zero = at::eq(new_scale.reshape({-1}), 0).nonzero();
      if (zero.numel() > 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("row ", zero[0].item<int64_t>(),
                         " of the weight is all zeros; optimum-quanto's "
                         "float8 absmax scale would be 0 and the row 0/0 = NaN"));
      }
    }
    new_data = QuantizeSymmetric(w, q, new_scale);
  } else {
    // MaxOptimizer over the grouped weight, then quanto::quantize_affine with a float shift.
    at::Tensor base = group_size_ > 0 ? w.reshape({-1, group_size_}) : w;
    if (base.size(0) == 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a one-row ", q.name, " weight without groups (in_features ", options_.in_features,
          ") is quantized by optimum-quanto along the wrong axis; not supported"));
    }
    at::Tensor rmin = at::amin(base, {1}, /*keepdim=*/true);
    at::Tensor rmax = at::amax(base, {1}, /*keepdim=*/true);
    new_scale = at::div(at::sub(rmax, rmin), q.qmax);
    new_shift = at::neg(rmin);
    at::Tensor u =
        at::clamp(at::round(at::div(at::add(base, new_shift), new_scale)), 0, q.qmax).to(at::kByte);
    new_data = QuantoPackWeights(u, q.bits);
  }
  const c10::Device device = target.device;
  data = new_data.to(device);
  scale = new_scale.to(device);
  if (new_shift.defined()) shift = new_shift.to(device);
  input_scale = at::ones({}, at::TensorOptions().dtype(input_scale.scalar_type()).device(device));
  output_scale = at::ones({}, at::TensorOptions().dtype(output_scale.scalar_type()).device(device));
  QS_RETURN_IF_ERROR(UnregisterParameter("weight"));
  weight = at::Tensor();
  return PackForKernels(target);
}

at::Tensor QuantoLinear::Dequantize() const {
  const QuantoQType& q = *quanto_.weights;
  if (q.bits == 8) {
    // QBytesDequantizer: float8 is upcast to the scale dtype first.
    return at::mul(scale, q.is_floating_point ? data.to(scale.scalar_type()) : data);
  }
  // QBitsDequantizer with a float shift: scale * u - shift, then ungroup.
  at::Tensor u = QuantoUnpackWeights(Resident(data), q.bits, rows_);
  return at::sub(at::mul(scale, u), shift).reshape({options_.out_features, options_.in_features});
}

at::Tensor QuantoLinear::QuantizeActivation(const at::Tensor& x, const at::Tensor& s) const {
  return QuantizeSymmetric(x, *quanto_.activations, s);
}

at::Tensor QuantoLinear::DequantizeActivation(const at::Tensor& q, const at::Tensor& s) const {
  return at::mul(s, quanto_.activations->is_floating_point ? q.to(s.scalar_type()) : q);
}

// F.linear(input, qweight) without bias, as WeightQBytesLinearFunction /
// QuantizedLinearFunction and quanto::qbytes_mm compute it. `in_scale` is set when the input is
// quantized.
at::Tensor QuantoLinear::Matmul(const at::Tensor& x, const at::Tensor& in_scale) const {
  const QuantoQType& w = *quanto_.weights;
  const int64_t k = options_.in_features;
  const int64_t n = options_.out_features;
  std::vector<int64_t> out_shape = x.sizes().vec();
  out_shape.back() = n;
  if (w.bits != 8) {
    // matmul(x, qweight.t()): t() falls back to dequantize(); a quantized input is dequantized
    // by the mm fallback.
    at::Tensor input = in_scale.defined() ? DequantizeActivation(x, in_scale) : x;
    return at::matmul(input, Dequantize().t());
  }
  at::Tensor out_scales = in_scale.defined() ? at::mul(in_scale, scale) : scale;
  const bool int8_inputs = x.scalar_type() == at::kChar && data.scalar_type() == at::kChar;
  const int64_t tokens = x.numel() / k;
  const bool int_mm =
      int8_inputs &&
      (x.is_cpu() || (x.is_cuda() && tokens > 16 && tokens % 8 == 0 && k % 8 == 0 && n % 8 == 0));
  if (int_mm) {
    // qbytes_int_mm: exact int32 products, scaled in float32.
    at::Tensor acc = at::_int_mm(x.reshape({-1, k}), data.t());
    return at::mul(acc.to(at::kFloat), out_scales.t())
        .to(out_scales.scalar_type())
        .reshape(out_shape);
  }
  if (x.is_cpu() && x.scalar_type() == at::kBFloat16 && data.scalar_type() == at::kChar &&
      k % 4 == 0) {
    return at::_weight_int8pack_mm(x.reshape({-1, k}), data, out_scales.flatten())
        .reshape(out_shape);
  }
  at::Tensor input = x.to(out_scales.scalar_type());
  at::Tensor wq = w.is_floating_point ? data.to(out_scales.scalar_type()) : data;
  return at::matmul(input, at::mul(out_scales, wq).t());
}

at::Tensor QuantoLinear::Forward(const at::Tensor& x) const {
  if (packed_weight() != nullptr) return QuantizedLinear::Forward(x);
  at::Tensor in_scale;
  at::Tensor input = x;
  if (quanto_.activations != nullptr) {
    if (calibration_) {
      calibration_->input_scale =
          UpdatedScale(calibration_->input_scale, AbsmaxScale(x, *quanto_.activations));
      in_scale = calibration_->input_scale;
    } else {
      in_scale = input_scale;
    }
    input = QuantizeActivation(x, in_scale);
  }
  at::Tensor y = Matmul(input, in_scale);
  if (bias.defined()) y = at::add(y, bias);
  if (calibration_) {
    calibration_->output_scale =
        UpdatedScale(calibration_->output_scale, AbsmaxScale(y, *quanto_.activations));
    if (calibration_->quantize_output) {
      calibration_->quantize_output = false;
      y = DequantizeActivation(QuantizeActivation(y, calibration_->output_scale),
                               calibration_->output_scale);
    }
  }
  return y;
}

std::string QuantoLinear::kernel_name() const {
  if (packed_weight() != nullptr) return packed_weight()->name();
  const QuantoQType& w = *quanto_.weights;
  const QuantoQType* a = quanto_.activations;
  const std::string wtag = w.is_floating_point ? "f8" : std::to_string(w.bits);
  const std::string atag = a == nullptr ? "32" : (a->is_floating_point ? "f8" : "8");
  const char* op = w.bits != 8 ? "dequantize_linear"
                   : (a != nullptr && !a->is_floating_point && !w.is_floating_point) ? "int_mm"
                                                                                     : "qbytes_mm";
  return absl::StrCat(op, "_w", wtag, "a", atag, "_quanto");
}

void QuantoLinear::BeginCalibration() {
  if (quanto_.activations == nullptr) return;
  calibration_ = std::make_unique<Calibration>();
  calibration_->input_scale = input_scale.clone();
  calibration_->output_scale = output_scale.clone();
}

void QuantoLinear::EndCalibration() {
  if (!calibration_) return;
  input_scale = calibration_->input_scale.to(input_scale.scalar_type());
  output_scale = calibration_->output_scale.to(output_scale.scalar_type());
  calibration_.reset();
}

}  // namespace quantserve::quant
