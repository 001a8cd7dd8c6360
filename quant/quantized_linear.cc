#include "quant/quantized_linear.h"

#include <ATen/ATen.h>

#include <unordered_map>
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
    out.emplace_back(p.name, Resident(*p.slot.tensor));
  }
  return out;
}

namespace {

// Equal bit for bit: codes stored in a float dtype (bnb's quant_storage, hqq's view_as_float)
// may read as NaNs, which at::equal would call different.
bool BitEqual(const at::Tensor& a, const at::Tensor& b) {
  const auto bits = [](const at::Tensor& t) {
    switch (t.element_size()) {
      case 1: return t.view(at::kByte);
      case 2: return t.view(at::kShort);
      case 4: return t.view(at::kInt);
      default: return t.view(at::kLong);
    }
  };
  return at::equal(bits(a.contiguous()), bits(b.contiguous()));
}

}  // namespace

void QuantizedLinear::SetPackedWeight(std::unique_ptr<kernels::PackedWeight> packed) {
  for (const Released& r : released_) *r.slot = r.rebuild(*packed_->Codes());
  released_.clear();
  packed_ = std::move(packed);
}

bool QuantizedLinear::ReleaseToPacked(at::Tensor* slot, CodesRebuild rebuild,
                                      const std::vector<at::Tensor*>& aliases) {
  if (packed_ == nullptr || !slot->defined() || slot->is_meta() || !slot->device().is_cpu()) {
    return false;
  }
  const std::optional<at::Tensor> codes = packed_->Codes();
  if (!codes.has_value()) return false;
  const at::Tensor rebuilt = rebuild(*codes);
  if (!rebuilt.defined() || rebuilt.sizes() != slot->sizes() ||
      rebuilt.scalar_type() != slot->scalar_type() || !BitEqual(rebuilt, *slot)) {
    return false;
  }
  const int64_t bytes = slot->numel() * static_cast<int64_t>(slot->element_size());
  const at::Tensor meta = at::empty(slot->sizes(), slot->options().device(at::kMeta));
  for (at::Tensor* alias : aliases) {
    if (alias == slot || !alias->defined() || !alias->is_same(*slot)) continue;
    *alias = meta;
    released_.push_back({alias, rebuild, 0});
  }
  *slot = meta;
  released_.push_back({slot, std::move(rebuild), bytes});
  return true;
}

at::Tensor QuantizedLinear::Resident(const at::Tensor& slot) const {
  for (const Released& r : released_) {
    if (r.slot == &slot) return r.rebuild(*packed_->Codes());
  }
  return slot;
}

bool QuantizedLinear::IsReleased(const at::Tensor* slot) const {
  for (const Released& r : released_) {
    if (r.slot == slot) return true;
  }
  return false;
}

int64_t QuantizedLinear::released_bytes() const {
  int64_t n = 0;
  for (const Released& r : released_) n += r.bytes;
  return n;
}

std::vector<std::pair<std::string, at::Tensor>> ResidentParameters(const models::Module& root) {
  // NamedModules() hands out mutable pointers; nothing here writes through them.
  std::unordered_map<const at::Tensor*, const QuantizedLinear*> owner;
  for (const auto& m : const_cast<models::Module&>(root).NamedModules()) {
    if (const auto* q = dynamic_cast<const QuantizedLinear*>(m.module); q != nullptr) {
      for (const auto& p : q->NamedParameters()) {
        if (q->IsReleased(p.slot.tensor)) owner.emplace(p.slot.tensor, q);
      }
    }
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : root.NamedParameters()) {
    auto it = owner.find(p.slot.tensor);
    const at::Tensor& t = *p.slot.tensor;
    out.emplace_back(p.name, it == owner.end() ? t : it->second->Resident(t));
  }
  return out;
}

}  // namespace quantserve::quant
