#include "quant/methods/hqq/hqq_linear.h"

#include <ATen/ATen.h>

#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/torch_status.h"
#include "quant/kernels/packed_weight.h"

namespace quantserve::quant {
namespace {

// optimize_weights_proximal_legacy's defaults (kappa is unused by the legacy solver).
constexpr double kLpNorm = 0.7;
constexpr double kBeta = 10.0;
constexpr int kIters = 20;

at::Tensor Bytes(const std::string& s) {
  at::Tensor t = at::empty({static_cast<int64_t>(s.size())}, at::kByte);
  std::memcpy(t.data_ptr(), s.data(), s.size());
  return t;
}
at::Tensor Flag(bool v) { return at::scalar_tensor(v ? 1 : 0, at::kByte); }
at::Tensor Int32(int64_t v) { return at::scalar_tensor(v, at::kInt); }

// HQQLinear.state_dict()'s metadata, encoded like hqq's encode_safetensor_type, in its order.
std::vector<std::pair<std::string, at::Tensor>> Metadata(const HqqWeightQuantParams& p,
                                                         const HqqLayout& layout,
                                                         const models::LinearOptions& linear) {
  std::vector<std::pair<std::string, at::Tensor>> m;
  m.emplace_back("nbits", p.nbits_is_float ? at::scalar_tensor(p.nbits, at::kFloat)
                                           : Int32(static_cast<int64_t>(p.nbits)));
  m.emplace_back("group_size", Int32(layout.group_size));
  m.emplace_back("shape", at::tensor(std::vector<int64_t>{linear.out_features, linear.in_features},
                                     at::kLong));
  m.emplace_back("axis", Int32(p.axis));
  m.emplace_back("packing", Bytes(layout.packing->name));
  m.emplace_back("unpack_view_dtype", Bytes(layout.packing->storage_name));
  m.emplace_back("view_as_float", Flag(p.view_as_float));
  m.emplace_back("quant_scale", Flag(false));
  m.emplace_back("quant_zero", Flag(false));
  m.emplace_back("compute_dtype", Bytes(TorchDtypeName(linear.dtype)));
  m.emplace_back("offload_meta", Flag(false));
  m.emplace_back("encoded_state_dict", Flag(true));
  m.emplace_back("stores_quant_config", Flag(true));
  if (p.has_channel_wise) m.emplace_back("channel_wise", Flag(true));
  if (p.has_optimize) m.emplace_back("optimize", Flag(p.optimize));
  if (p.has_round_zero) m.emplace_back("round_zero", Flag(p.round_zero));
  if (p.has_bitpack) m.emplace_back("bitpack", Flag(true));
  return m;
}

// A metadata tensor as hqq's decode_safetensor_type reads it (for messages).
std::string MetaText(const at::Tensor& t) {
  if (t.dim() == 1 && t.scalar_type() == at::kByte) {
    std::string s(static_cast<size_t>(t.numel()), ' ');
    std::memcpy(s.data(), t.data_ptr(), s.size());
    return absl::StrCat("'", s, "'");
  }
  if (t.dim() == 1) {
    const at::Tensor v = t.to(at::kLong).contiguous();
    const int64_t* p = v.data_ptr<int64_t>();
    return absl::StrCat("[", absl::StrJoin(std::vector<int64_t>(p, p + v.numel()), ", "), "]");
  }
  if (at::isFloatingType(t.scalar_type())) {
    std::ostringstream v;
    v << t.item<double>();
    return v.str();
  }
  return absl::StrCat(t.item<int64_t>());
}

// shrink_lp_op: sign(x) * max(0, |x| - |x|^(p-1) / beta).
at::Tensor ShrinkLp(const at::Tensor& x) {
  at::Tensor out = x.abs();
  out.sub_(out.pow(kLpNorm - 1).mul(1.0 / kBeta)).clamp_min_(0.0);
  out.mul_(x.sign());
  return out;
}

at::Tensor Codes(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero,
                 int64_t max_code) {
  return at::round(w.mul(scale).add(zero)).clamp_(at::Scalar(int64_t{0}), at::Scalar(max_code));
}

// optimize_weights_proximal_legacy on the CPU (float32). Note that `zero` is updated in the
// same step whose error is tested, so the zero returned is one update past the last improving
// step, also when the loop breaks.
std::pair<at::Tensor, at::Tensor> OptimizeProximalLegacy(const at::Tensor& w,
                                                         const at::Tensor& scale, at::Tensor zero,
                                                         int64_t max_code, int64_t axis) {
  float best_error = std::numeric_limits<float>::infinity();
  for (int i = 0; i < kIters; ++i) {
    at::Tensor w_q = Codes(w, scale, zero, max_code);
    at::Tensor w_r = w_q.sub(zero).div(scale);
    const at::Tensor residual = w.sub(w_r);  // hqq computes it twice; same bits
    at::Tensor w_e = ShrinkLp(residual);
    zero = at::mean(w_q.sub(w.sub(w_e).mul(scale)), {axis}, /*keepdim=*/true);
    const float error = residual.abs().mean().item<float>();
    if (error < best_error) {
      best_error = error;
    } else {
      break;
    }
  }
  return {Codes(w, scale, zero, max_code), zero};
}

}  // namespace

absl::StatusOr<HqqLayout> HqqLayout::Create(int64_t out_features, int64_t in_features,
                                            const HqqWeightQuantParams& params,
                                            c10::ScalarType compute_dtype) {
  HqqLayout l;
  const bool axis1 = params.axis == 1;
  l.group_size = params.group_size.value_or(axis1 ? in_features : out_features);
  const int64_t numel = out_features * in_features;
  if (l.group_size <= 0 || numel <= 0 || numel % l.group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hqq group_size ", l.group_size, " does not divide the [", out_features, ", ", in_features,
        "] weight (", numel, " elements); hqq asserts numel % group_size == 0"));
  }
  l.groups = numel / l.group_size;
  l.grouped_rows = axis1 ? l.groups : l.group_size;
  l.grouped_cols = axis1 ? l.group_size : l.groups;
  l.packing = &HqqPackingForBits(params.nbits);
  const int64_t packed_rows = HqqPackedRows(*l.packing, l.grouped_rows);
  if (packed_rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hqq ", l.packing->name, " packing needs the grouped weight's rows (",
        axis1 ? "N*K/group_size" : "group_size", " = ", l.grouped_rows, ") to be a multiple of ",
        l.packing->per_word, "; hqq would mis-pack this weight"));
  }
  int64_t packed_cols = l.grouped_cols;
  if (params.view_as_float) {
    const int64_t bytes = packed_cols * static_cast<int64_t>(c10::elementSize(l.packing->storage));
    const int64_t element = static_cast<int64_t>(c10::elementSize(compute_dtype));
    if (bytes % element != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("hqq view_as_float cannot view ", packed_cols, " ", l.packing->storage_name,
                       " codes per row as ", TorchDtypeName(compute_dtype)));
    }
    packed_cols = bytes / element;
  }
  l.w_q_shape = {packed_rows, packed_cols};
  l.scale_shape = axis1 ? std::vector<int64_t>{l.groups, 1} : std::vector<int64_t>{1, l.groups};
  return l;
}

absl::StatusOr<std::shared_ptr<HqqLinear>> HqqLinear::Create(const models::LinearOptions& linear,
                                                             const HqqWeightQuantParams& params,
                                                             bool prequantized) {
  QS_ASSIGN_OR_RETURN(HqqLayout layout, HqqLayout::Create(linear.out_features, linear.in_features,
                                                          params, linear.dtype));
  return std::shared_ptr<HqqLinear>(new HqqLinear(linear, params, std::move(layout), prequantized));
}

HqqLinear::HqqLinear(const models::LinearOptions& linear, const HqqWeightQuantParams& params,
                     HqqLayout layout, bool prequantized)
    : QuantizedLinear(linear), params_(params), layout_(std::move(layout)) {
  const c10::ScalarType packed_dtype =
      params_.view_as_float ? linear.dtype : layout_.packing->storage;
  // Quantizing at load, the state is derived from the float `weight`; a pre-quantized
  // checkpoint holds exactly hqq's state dict instead.
  auto add = [&](const std::string& name, at::Tensor* t) {
    if (prequantized) {
      RegisterParameter(name, t);
    } else {
      RegisterDerivedParameter(name, t);
    }
  };
  if (!prequantized) {
    weight = models::MetaTensor({linear.out_features, linear.in_features}, linear.dtype);
    RegisterParameter("weight", &weight);
  }
  w_q = models::MetaTensor(layout_.w_q_shape, packed_dtype);
  add("W_q", &w_q);
  scale = models::MetaTensor(layout_.scale_shape, linear.dtype);
  add("scale", &scale);
  zero = models::MetaTensor(layout_.scale_shape, linear.dtype);
  add("zero", &zero);
  RegisterBias();
  for (auto& [name, value] : Metadata(params_, layout_, linear)) {
    metadata_.emplace_back(name, at::empty(value.sizes(), value.options().device(at::kMeta)));
    add(name, &metadata_.back().second);
  }
}

std::string HqqLinear::Describe() const {
  std::ostringstream nbits;
  nbits << params_.nbits;
  return absl::StrCat("hqq ", nbits.str(), "-bit, group_size ", layout_.group_size, ", axis ",
                      params_.axis, params_.view_as_float ? ", view_as_float" : "", " (",
                      TorchDtypeName(options().dtype), ") for [", options().out_features, ", ",
                      options().in_features, "]");
}

absl::Status HqqLinear::QuantizeWeight(const at::Tensor& weight_in, const LoadTarget& target) {
  const models::LinearOptions& o = options();
  // HQQLinear quantizes the Linear's weight as the model holds it (compute dtype), as float32.
  at::Tensor w = weight_in.to(o.dtype).to(at::kFloat);
  const int64_t axis = params_.axis;
  w = axis == 1 ? w.reshape({-1, layout_.group_size}) : w.reshape({layout_.group_size, -1});
  const at::Tensor w_min = std::get<0>(w.min(axis, /*keepdim=*/true));
  const at::Tensor w_max = std::get<0>(w.max(axis, /*keepdim=*/true));
  const int64_t max_code = params_.max_code();

  // hqq works with the inverse scale; `max_v / denom` is Tensor.__rtruediv__, i.e.
  // reciprocal(denom) * max_v (not a division).
  const at::Tensor denom = w_max.sub(w_min);
  at::Tensor inv_scale = denom.reciprocal().mul(at::Scalar(max_code));
  inv_scale = at::where(denom.abs().le(1e-4), at::full_like(inv_scale, 1.0), inv_scale);
  inv_scale = at::clamp(inv_scale, std::nullopt, at::Scalar(2e4));
  at::Tensor z = w_min.neg().mul(inv_scale);
  if (params_.round_zero) z = at::round(z);

  at::Tensor codes;
  if (params_.optimize) {
    std::tie(codes, z) = OptimizeProximalLegacy(w, inv_scale, z, max_code, axis);
  } else {
    codes = Codes(w, inv_scale, z, max_code);
  }

  at::Tensor packed = HqqPack(codes, *layout_.packing);
  if (params_.view_as_float) packed = packed.view(o.dtype);
  w_q = packed.to(target.device);
  weight = w_q;
  scale = inv_scale.reciprocal().to(o.dtype).to(target.device);
  zero = z.to(o.dtype).to(target.device);
  auto values = Metadata(params_, layout_, o);
  for (size_t i = 0; i < values.size(); ++i) metadata_[i].second = std::move(values[i].second);
  return PackForCpu(target.device);
}

absl::Status HqqLinear::PackForCpu(const c10::Device& device) {
  const int64_t n = options().out_features;
  const int64_t k = options().in_features;
  // Axis 1 groups are runs of the row-major [N, K] weight; they are runs of one row each
  // only when the group size divides K.
  if (!device.is_cpu() || !KernelsEnabled() || params_.nbits != 4 || params_.axis != 1 ||
      k % layout_.group_size != 0) {
    return absl::OkStatus();
  }
  const at::Tensor packed =
      (params_.view_as_float ? w_q.view(layout_.packing->storage) : w_q).cpu();
  kernels::Lut4Weight w;
  w.codes = HqqUnpack(packed, *layout_.packing, at::kByte).reshape({n, k}).contiguous();
  for (int i = 0; i < 16; ++i) w.lut[static_cast<size_t>(i)] = static_cast<float>(i);
  const int64_t groups_per_row = k / layout_.group_size;
  const at::Tensor s = scale.cpu().to(at::kFloat).reshape({n, groups_per_row});
  w.scale = s.contiguous();
  w.offset = (zero.cpu().to(at::kFloat).reshape({n, groups_per_row}) * s).neg().contiguous();
  w.group_size = layout_.group_size;
  w.compute_dtype = options().dtype;
  w.activation_bits = options().activation_bits;
  auto made = kernels::PackLut4(w, device);
  if (!made.ok()) return common::Annotate(made.status(), absl::StrCat("packing ", Describe()));
  SetPackedWeight(std::move(*made));
  // One resident copy: W_q (and the float input slot aliasing it after a quantize-at-load) is
  // rebuilt from the kernel's codes when Save or Dequantize needs it.
  return common::TorchCall("hqq: dropping the serialized codes", [&] {
    const std::optional<c10::ScalarType> view =
        params_.view_as_float ? std::optional<c10::ScalarType>(options().dtype) : std::nullopt;
    const CodesRebuild rebuild = [packing = layout_.packing, g = layout_.group_size,
                                  view](const at::Tensor& codes) {
      const at::Tensor packed = HqqPack(codes.reshape({-1, g}), *packing);
      return view.has_value() ? packed.view(*view) : packed;
    };
    ReleaseToPacked(&w_q, rebuild, {&weight});
  });
}

absl::Status HqqLinear::LoadSerializedTensor(const std::string& local,
                                             const std::string& full_name,
                                             const at::Tensor& value, const LoadTarget& target) {
  if (local == "W_q" && params_.view_as_float && at::isFloatingType(value.scalar_type()) &&
      value.dim() == 2) {
    // hqq views W_q back through unpack_view_dtype, so any float view of the same bytes works.
    const c10::ScalarType storage = layout_.packing->storage;
    const int64_t row_bytes = value.size(1) * static_cast<int64_t>(value.element_size());
    if (row_bytes % static_cast<int64_t>(c10::elementSize(storage)) == 0) {
      at::Tensor codes = value.contiguous().view(storage);
      if (codes.size(0) == layout_.w_q_shape[0] && codes.size(1) == layout_.grouped_cols) {
        w_q = codes.view(options().dtype)
                  .to(at::TensorOptions().device(target.device), /*non_blocking=*/false,
                      /*copy=*/true);
        return absl::OkStatus();
      }
    }
    return ExpectTensor(full_name, value, w_q.sizes(), w_q.scalar_type(), Describe());
  }
  for (auto& [name, slot] : metadata_) {
    if (name != local) continue;
    // hqq keeps its metadata on the CPU; compute_dtype may name any float dtype (checked in
    // FinishSerializedLoad), so only its encoding is fixed here.
    if (name == "compute_dtype" && value.dim() == 1 && value.scalar_type() == at::kByte) {
      slot = value.clone();
      return absl::OkStatus();
    }
    QS_RETURN_IF_ERROR(ExpectTensor(full_name, value, slot.sizes(), slot.scalar_type(),
                                    absl::StrCat(Describe(), " metadata")));
    slot = value.clone();
    return absl::OkStatus();
  }
  return QuantizedLinear::LoadSerializedTensor(local, full_name, value, target);
}

absl::Status HqqLinear::FinishSerializedLoad(const std::string& name, const LoadTarget& target) {
  auto expected = Metadata(params_, layout_, options());
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& [key, want] = expected[i];
    const at::Tensor& got = metadata_[i].second;
    const std::string full_name = absl::StrCat(name, ".", key);
    if (key == "compute_dtype") {
      const std::string text = MetaText(got);
      bool known = false;
      for (c10::ScalarType t : {at::kFloat, at::kHalf, at::kBFloat16}) {
        known = known || text == absl::StrCat("'", TorchDtypeName(t), "'");
      }
      if (!known) {
        return absl::DataLossError(absl::StrCat(
            "tensor '", full_name, "' holds ", text,
            " but hqq's compute_dtype must be torch.float32, torch.float16 or torch.bfloat16"));
      }
      continue;  // scale/zero were converted to this load's dtype
    }
    if (!got.equal(want)) {
      return absl::DataLossError(absl::StrCat("tensor '", full_name, "' holds ", MetaText(got),
                                              " but the quantization_config gives ",
                                              MetaText(want), " for this module (", Describe(),
                                              "); hqq unpacks W_q by this metadata"));
    }
  }
  // What SerializedTensors writes: the checkpoint's metadata, compute_dtype as loaded now.
  for (size_t i = 0; i < expected.size(); ++i) metadata_[i].second = std::move(expected[i].second);
  return PackForCpu(target.device);
}

absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> HqqLinear::SerializedTensors()
    const {
  // HQQLinear.state_dict(): everything but the float input slot (an alias of W_q).
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : NamedParameters()) {
    if (p.name == "weight" || !p.slot.tied_to.empty()) continue;
    out.emplace_back(p.name, Resident(*p.slot.tensor));
  }
  return out;
}

at::Tensor HqqLinear::Dequantize() const {
  const at::Tensor q = Resident(w_q);
  const at::Tensor packed = params_.view_as_float ? q.view(layout_.packing->storage) : q;
  at::Tensor w = HqqUnpack(packed, *layout_.packing, options().dtype);
  // Only the 3-bit format pads rows (Quantizer.dequantize trims when nbits == 3).
  if (layout_.packing->pads_rows) w = w.slice(0, 0, layout_.grouped_rows);
  return w.sub(zero).mul(scale).reshape({options().out_features, options().in_features});
}

at::Tensor HqqLinear::Forward(const at::Tensor& x) const {
  at::Tensor out = packed_weight() != nullptr
                       ? packed_weight()->Matmul(x)
                       : at::matmul(x, Dequantize().to(x.scalar_type()).t());
  if (bias.defined()) out.add_(bias.to(out.scalar_type()));
  return out;
}

}  // namespace quantserve::quant
