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
  return FindQuantoQType(config_.weights)->bits;
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
  return LinearQuantizer::ProcessModelBeforeWeightLoading(root, target);
}

absl::StatusOr<std::shared_ptr<QuantizedLinear>> QuantoQuantizer::MakeLinear(
    const std::string& name, const models::LinearOptions& options, const LoadTarget& target) {
  QuantoLinearOptions o;
  o.linear = options;
  o.weights = FindQuantoQType(config_.weights);
  if (config_.activations.has_value()) o.activations = FindQuantoQType(*config_.activations);
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

absl::Status RegisterQuantoQuantizer(QuantizerRegistry& registry) {
  return registry.Register("quanto", &QuantoQuantizer::Create);
}

}  // namespace quantserve::quant
