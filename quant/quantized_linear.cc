#include "quant/quantized_linear.h"

#include <ATen/ATen.h>

#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "quant/kernels/packed_weight.h"

namespace quantserve::quant {

void QuantizedLinear::RegisterBias() {
  if (!options().bias) return;
  bias = models::MetaTensor({options().out_features}, options().dtype);
  RegisterParameter("bias", &bias);
}

bool QuantizedLinear::KernelsEnabled() { return kernels::KernelsEnabled(); }

std::string QuantizedLinear::kernel_name() const {
  return packed_ != nullptr ? packed_->name() : "dequantize_linear_ref";
}

at::Tensor QuantizedLinear::Forward(const at::Tensor& x) const {
  if (packed_ != nullptr) {
    at::Tensor y = packed_->Matmul(x);
    return bias.defined() ? y + bias.to(x.scalar_type()) : y;
  }
  at::Tensor w = Dequantize().to(x.scalar_type());
  return at::linear(x, w, bias.defined() ? std::optional<at::Tensor>(bias.to(x.scalar_type()))
                                         : std::nullopt);
}

int64_t QuantizedLinear::memory_footprint_bytes() const {
  int64_t n = 0;
  std::unordered_set<const void*> seen;
  for (const auto& p : NamedParameters()) {
    const at::Tensor& t = *p.slot.tensor;
    if (!t.defined() || t.is_meta() || !seen.insert(t.data_ptr()).second) continue;
    n += t.numel() * static_cast<int64_t>(t.element_size());
  }
  return n + runtime_bytes();
}

int64_t QuantizedLinear::runtime_bytes() const {
  // A runtime tensor may alias a registered one (codes used as loaded): count storage once.
  std::unordered_set<const void*> seen;
  for (const auto& p : NamedParameters()) {
    if (p.slot.tensor->defined() && !p.slot.tensor->is_meta()) {
      seen.insert(p.slot.tensor->storage().data());
    }
  }
  int64_t n = 0;
  for (const at::Tensor* t : runtime_) {
    if (!t->defined() || t->is_meta() || !seen.insert(t->storage().data()).second) continue;
    n += t->numel() * static_cast<int64_t>(t->element_size());
  }
  return n + (packed_ != nullptr ? packed_->bytes() : 0);
}

absl::Status QuantizedLinear::ExpectTensor(const std::string& full_name, const at::Tensor& value,
                                           at::IntArrayRef shape, c10::ScalarType dtype,
                                           const std::string& what) {
  if (value.sizes() != shape || value.scalar_type() != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", full_name, "' is ", c10::toString(value.scalar_type()), " [",
        absl::StrJoin(value.sizes(), ", "), "] but ", what, " expects ", c10::toString(dtype),
        " [", absl::StrJoin(shape, ", "), "]"));
  }
  return absl::OkStatus();
}

absl::Status QuantizedLinear::LoadSerializedTensor(const std::string& local,
                                                   const std::string& full_name,
                                                   const at::Tensor& value,
                                                   const LoadTarget& target) {
  for (const auto& p : NamedParameters()) {
    if (p.name != local) continue;
    at::Tensor& slot = *p.slot.tensor;
    const bool convert = at::isFloatingType(slot.scalar_type()) &&
                         at::isFloatingType(value.scalar_type()) &&
                         c10::elementSize(slot.scalar_type()) > 1 &&
                         c10::elementSize(value.scalar_type()) > 1;  // never reinterpret fp8
    if (value.sizes() != slot.sizes() ||
        (!convert && value.scalar_type() != slot.scalar_type())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", full_name, "' is ", c10::toString(value.scalar_type()), " [",
          absl::StrJoin(value.sizes(), ", "), "] but ", type_name(), " expects ",
          c10::toString(slot.scalar_type()), " [", absl::StrJoin(slot.sizes(), ", "), "]"));
    }
    slot = value.to(at::TensorOptions().dtype(slot.scalar_type()).device(target.device),
                    /*non_blocking=*/false, /*copy=*/true);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tensor '", full_name, "' is not part of ", type_name(), "'s layout"));
}

absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> QuantizedLinear::SerializedTensors()
    const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : NamedParameters()) {
    if (!p.slot.tied_to.empty()) continue;
    out.emplace_back(p.name, *p.slot.tensor);
  }
  return out;
}

}  // namespace quantserve::quant
