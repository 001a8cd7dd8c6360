#include "quant/linear_quantizer.h"

#include <ATen/ATen.h>

#include <unordered_map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/torch_status.h"
#include "quant/module_match.h"

namespace quantserve::quant {

LinearQuantizer::LinearQuantizer(std::string method, QuantizerTraits traits,
                                 std::string normalized_config_json,
                                 std::optional<std::vector<std::string>> modules_to_not_convert)
    : method_(std::move(method)),
      traits_(traits),
      normalized_config_json_(std::move(normalized_config_json)),
      modules_to_not_convert_(std::move(modules_to_not_convert)) {}

absl::Status LinearQuantizer::ValidateEnvironment(const LoadTarget& target) {
  prequantized_ = target.checkpoint_is_prequantized;
  if (!prequantized_ && traits_.requires_calibration) {
    return absl::FailedPreconditionError(absl::StrCat(
        "quant_method '", method_, "' needs a checkpoint quantized offline with calibration data "
        "(requires_calibration); this checkpoint has no quantization_config. Quantize it with ",
        method_, "'s own tooling first, or pick a method that quantizes at load (bitsandbytes, "
        "hqq, quanto, eetq, fbgemm_fp8, torchao)"));
  }
  if (!prequantized_ && !on_the_fly_unsupported_reason_.empty()) {
    return absl::FailedPreconditionError(on_the_fly_unsupported_reason_);
  }
  if (prequantized_) return PrequantizedSupport();
  return absl::OkStatus();
}

absl::Status LinearQuantizer::PrequantizedSupport() const {
  return absl::UnimplementedError(absl::StrCat(
      "loading checkpoints pre-quantized with '", method_,
      "' is not supported yet; load the unquantized checkpoint with this quantization_config "
      "to quantize it at load"));
}

QuantizedLinear* LinearQuantizer::OwningModule(const std::string& name, std::string* local) const {
  // Local names may contain dots ("weight.absmax"): try the longest module prefix first.
  for (size_t dot = name.rfind('.'); dot != std::string::npos && dot > 0;
       dot = name.rfind('.', dot - 1)) {
    auto it = converted_.find(name.substr(0, dot));
    if (it != converted_.end()) {
      if (local != nullptr) *local = name.substr(dot + 1);
      return it->second.get();
    }
  }
  return nullptr;
}

std::vector<std::string> LinearQuantizer::ModulesToNotConvert(const models::Module& root) const {
  // transformers: the default skips apply only when the config gives no list.
  if (!modules_to_not_convert_.has_value()) return DefaultModulesToNotConvert(root);
  std::vector<std::string> skip = *modules_to_not_convert_;
  // A tied weight is always kept: transformers converts a tied lm_head the user did not list
  // and then fails at the first forward; we keep it float instead.
  for (const auto& p : root.NamedParameters()) {
    if (!p.slot.tied_to.empty()) {
      for (const std::string& name : {p.name, p.slot.tied_to}) {
        skip.push_back(absl::EndsWith(name, ".weight") ? name.substr(0, name.size() - 7) : name);
      }
    }
  }
  return skip;
}

bool LinearQuantizer::ShouldConvert(const std::string& name,
                                    const std::vector<std::string>& skip) const {
  return !MatchesAnySkipPattern(name, skip);
}

absl::Status LinearQuantizer::ProcessModelBeforeWeightLoading(models::Module& root,
                                                              const LoadTarget& target) {
  const std::vector<std::string> skip = ModulesToNotConvert(root);
  std::unordered_map<std::string, models::Module*> by_name;
  for (const auto& m : root.NamedModules()) by_name.emplace(m.name, m.module);
  for (const auto& m : root.NamedModules()) {
    auto* dense = dynamic_cast<models::DenseLinear*>(m.module);
    if (dense == nullptr || !ShouldConvert(m.name, skip)) continue;
    const auto dot = m.name.rfind('.');
    models::Module* parent = dot == std::string::npos ? &root : by_name.at(m.name.substr(0, dot));
    const std::string child = dot == std::string::npos ? m.name : m.name.substr(dot + 1);
    models::LinearOptions options = dense->options();
    options.dtype = target.dtype;
    options.activation_bits = target.activation_bits;
    std::shared_ptr<QuantizedLinear> q;
    QS_RETURN_IF_ERROR(common::TorchCall(absl::StrCat("building ", method_, " module ", m.name),
                                         [&]() -> absl::Status {
                                           QS_ASSIGN_OR_RETURN(q, MakeLinear(m.name, options, target));
                                           return absl::OkStatus();
                                         }));
    QS_RETURN_IF_ERROR(parent->ReplaceChild(child, q));
    converted_.emplace(m.name, q);
    order_.push_back(m.name);
  }
  return absl::OkStatus();
}

int64_t LinearQuantizer::EstimatedParamBytes(const std::string& name,
                                             const at::Tensor& meta) const {
  if (!prequantized_ && CheckQuantizedParam(name)) {
    const std::string module = name.substr(0, name.size() - 7);
    return static_cast<int64_t>(static_cast<double>(meta.numel()) *
                                EstimatedWeightBits(module) / 8.0);
  }
  return Quantizer::EstimatedParamBytes(name, meta);
}

bool LinearQuantizer::CheckQuantizedParam(const std::string& name) const {
  if (prequantized_) return OwningModule(name, nullptr) != nullptr;
  if (!absl::EndsWith(name, ".weight")) return false;
  return converted_.count(name.substr(0, name.size() - 7)) != 0;
}

absl::Status LinearQuantizer::CreateQuantizedParam(const std::string& name,
                                                   const at::Tensor& value, models::ParamSlot& slot,
                                                   const LoadTarget& target) {
  if (prequantized_) {
    std::string local;
    QuantizedLinear* owner = OwningModule(name, &local);
    if (owner == nullptr) return absl::InternalError("no quantized module for " + name);
    return common::TorchCall(absl::StrCat("loading ", name), [&] {
      return owner->LoadSerializedTensor(local, name, value, target);
    });
  }
  QuantizedLinear* module = converted_module(name.substr(0, name.size() - 7));
  if (module == nullptr) return absl::InternalError("no quantized module for " + name);
  const auto& o = module->options();
  if (value.dim() != 2 || value.size(0) != o.out_features || value.size(1) != o.in_features) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "' has shape [", absl::StrJoin(value.sizes(), ", "), "] but ", method_,
        " expects [", o.out_features, ", ", o.in_features, "]"));
  }
  if (!at::isFloatingType(value.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name,
                                                   "' must be floating point to be quantized"));
  }
  const std::string context = absl::StrCat("quantizing ", name);
  return common::TorchCall(context, [&] {
    return common::Annotate(module->QuantizeWeight(value, target), context);
  });
}

absl::Status LinearQuantizer::ProcessModelAfterWeightLoading(models::Module& root,
                                                             const LoadTarget& target) {
  if (!prequantized_) return absl::OkStatus();
  for (const std::string& name : order_) {
    QuantizedLinear* module = converted_.at(name).get();
    QS_RETURN_IF_ERROR(common::TorchCall(absl::StrCat("checking ", name), [&] {
      return module->FinishSerializedLoad(name, target);
    }));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> LinearQuantizer::SerializedState(
    const models::Module& root) const {
  if (!traits_.is_serializable) {
    return absl::FailedPreconditionError(absl::StrCat(
        "models quantized with '", method_, "' cannot be saved (transformers' ", method_,
        " quantizer is not serializable); save the unquantized model and quantize at load"));
  }
  return ModuleState(root);
}

absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> LinearQuantizer::ModuleState(
    const models::Module& root) const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::unordered_map<std::string, bool> emitted;  // converted module -> written
  for (const auto& p : root.NamedParameters()) {
    if (!p.slot.tied_to.empty()) continue;
    std::string local;
    if (QuantizedLinear* owner = OwningModule(p.name, &local); owner != nullptr) {
      const std::string module = p.name.substr(0, p.name.size() - local.size() - 1);
      if (emitted[module]) continue;
      emitted[module] = true;
      QS_ASSIGN_OR_RETURN(auto tensors, owner->SerializedTensors());
      for (auto& [name, t] : tensors) out.emplace_back(absl::StrCat(module, ".", name), std::move(t));
      continue;
    }
    out.emplace_back(p.name, *p.slot.tensor);
  }
  return out;
}

std::vector<std::string> LinearQuantizer::converted_modules() const { return order_; }

QuantizedLinear* LinearQuantizer::converted_module(const std::string& name) const {
  auto it = converted_.find(name);
  return it == converted_.end() ? nullptr : it->second.get();
}

}  // namespace quantserve::quant
