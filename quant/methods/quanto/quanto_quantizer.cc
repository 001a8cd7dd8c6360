#include "quant/methods/quanto/quanto_quantizer.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/torch_status.h"
#include "models/layers.h"
#include "quant/methods/quanto/quanto_linear.h"

namespace quantserve::quant {
namespace {

QuantizerTraits QuantoTraits() {
  QuantizerTraits t;
  t.requires_calibration = false;
  t.is_serializable = false;
  t.is_trainable = true;
  t.requires_parameters_quantization = true;
  return t;
}

}  // namespace

QuantoQuantizer::QuantoQuantizer(QuantoConfig config)
    : LinearQuantizer("quanto", QuantoTraits(), config.ToJson(), config.modules_to_not_convert),
      config_(std::move(config)) {}

absl::StatusOr<std::unique_ptr<Quantizer>> QuantoQuantizer::Create(const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(QuantoConfig config, QuantoConfig::Parse(config_json));
  return std::unique_ptr<Quantizer>(new QuantoQuantizer(std::move(config)));
}

absl::Status QuantoQuantizer::ValidateEnvironment(const LoadTarget& target) {
  QS_RETURN_IF_ERROR(LinearQuantizer::ValidateEnvironment(target));
  // A saved model carries its activation scales, and transformers' device_map check is for
  // quantizing at load.
  if (target.checkpoint_is_prequantized) return absl::OkStatus();
  if (config_.quantization_map.has_value()) {
    return absl::InvalidArgumentError(
        "quantization_config.quantization_map describes an optimum-quanto checkpoint "
        "(quanto_qmap.json); it cannot quantize an unquantized checkpoint at load (use "
        "\"weights\")");
  }
  // transformers' condition, operator precedence included:
  // len(device_map) > 1 and "cpu" in values() or "disk" in values().
  bool cpu = false, disk = false;
  for (const auto& [prefix, device] : target.device_map) {
    cpu = cpu || device == "cpu";
    disk = disk || device == "disk";
  }
  if ((target.device_map.size() > 1 && cpu) || disk) {
    return absl::InvalidArgumentError(
        "device_map: quanto cannot place modules on the CPU or disk next to other devices when "
        "the model is quantized at load; remove the cpu/disk entries");
  }
  if (config_.activations.has_value() && !target.has_calibration_texts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quantization_config.activations \"", *config_.activations,
        "\" quantizes activations with static scales measured on sample text (optimum-quanto "
        "Calibration); pass LoadModelRequest.calibration_texts (a few representative texts), or "
        "drop activations for weight-only quantization"));
  }
  return absl::OkStatus();
}

double QuantoQuantizer::EstimatedWeightBits(const std::string& name) const {
  if (config_.quantization_map.has_value()) {
    auto it = config_.quantization_map->find(name);
    if (it != config_.quantization_map->end()) return FindQuantoQType(it->second.weights)->bits;
  }
  return FindQuantoQType(config_.weights)->bits;
}

bool QuantoQuantizer::ShouldConvert(const std::string& name,
                                    const std::vector<std::string>& skip) const {
  // requantize(): exactly the modules of the quantization map.
  if (config_.quantization_map.has_value()) return config_.quantization_map->count(name) != 0;
  return LinearQuantizer::ShouldConvert(name, skip);
}

absl::Status QuantoQuantizer::ProcessModelBeforeWeightLoading(models::Module& root,
                                                              const LoadTarget& target) {
  if (config_.activations.has_value()) {
    for (const auto& m : root.NamedModules()) {
      if (dynamic_cast<models::LayerNorm*>(m.module) != nullptr) {
        return absl::UnimplementedError(absl::StrCat(
            "quanto activations: ", m.name,
            " is a LayerNorm, which transformers would turn into an activation-quantizing "
            "QLayerNorm; that is not supported (use weight-only quanto for this model)"));
      }
    }
  }
  QS_RETURN_IF_ERROR(LinearQuantizer::ProcessModelBeforeWeightLoading(root, target));
  if (config_.quantization_map.has_value()) {
    for (const auto& [module, q] : *config_.quantization_map) {
      if (converted_module(module) != nullptr) continue;
      std::string what = "no module of that name";
      for (const auto& m : root.NamedModules()) {
        if (m.name == module) what = absl::StrCat("a ", m.module->type_name());
      }
      for (const auto& p : root.NamedParameters()) {
        if (p.name == module + ".weight" && !p.slot.tied_to.empty()) {
          what = "a Linear tied to " + p.slot.tied_to;
        }
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "quanto_qmap.json quantizes '", module, "' (weights ", q.weights, ") but the model has ",
          what, "; only untied Linear modules are supported"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<QuantizedLinear>> QuantoQuantizer::MakeLinear(
    const std::string& name, const models::LinearOptions& options, const LoadTarget& target) {
  QuantoLinearOptions o;
  o.linear = options;
  o.prequantized = target.checkpoint_is_prequantized;
  if (config_.quantization_map.has_value()) {
    const QuantoConfig::ModuleQTypes& q = config_.quantization_map->at(name);
    o.weights = FindQuantoQType(q.weights);
    if (q.activations.has_value()) o.activations = FindQuantoQType(*q.activations);
  } else {
    o.weights = FindQuantoQType(config_.weights);
    if (config_.activations.has_value()) o.activations = FindQuantoQType(*config_.activations);
  }
  QS_ASSIGN_OR_RETURN(std::shared_ptr<QuantoLinear> linear, QuantoLinear::Create(o));
  return std::shared_ptr<QuantizedLinear>(std::move(linear));
}

absl::Status QuantoQuantizer::Calibrate(models::Module& root,
                                        const std::function<absl::Status()>& run_texts) {
  if (!WantsCalibration()) return Quantizer::Calibrate(root, run_texts);
  std::vector<QuantoLinear*> modules;
  for (const std::string& name : converted_modules()) {
    if (auto* q = dynamic_cast<QuantoLinear*>(converted_module(name))) modules.push_back(q);
  }
  for (QuantoLinear* q : modules) q->BeginCalibration();
  absl::Status status = common::TorchCall("quanto calibration", run_texts);
  for (QuantoLinear* q : modules) q->EndCalibration();
  return status;
}

std::map<std::string, std::string> QuantoQuantizer::ExtraSavedFiles() const {
  std::map<std::string, QuantoConfig::ModuleQTypes> map;
  for (const std::string& name : converted_modules()) {
    const auto* q = dynamic_cast<const QuantoLinear*>(converted_module(name));
    if (q == nullptr) continue;
    QuantoConfig::ModuleQTypes types;
    types.weights = q->quanto_options().weights->name;
    if (q->quanto_options().activations != nullptr) {
      types.activations = q->quanto_options().activations->name;
    }
    map.emplace(name, std::move(types));
  }
  return {{"quanto_qmap.json", QuantoConfig::QuantizationMapJson(map)}};
}

absl::Status RegisterQuantoQuantizer(QuantizerRegistry& registry) {
  return registry.Register("quanto", &QuantoQuantizer::Create);
}

}  // namespace quantserve::quant
