#pragma once
// QuantoQuantizer: transformers 5.23's QuantoHfQuantizer for an unquantized checkpoint
// quantized at load, plus optimum-quanto's activation calibration.
//
//   traits               requires_calibration false, NOT serializable (transformers cannot save
//                        quanto models), trainable, requires_parameters_quantization
//   ValidateEnvironment  transformers' device_map check (a dict with "disk", or with "cpu" and
//                        more than one entry, is INVALID_ARGUMENT); `activations` without
//                        calibration texts is INVALID_ARGUMENT (transformers refuses
//                        activations outright; we calibrate them instead)
//   UpdateTorchDtype     the requested dtype (5.23 has no update_dtype override)
//   max_memory           90% of the budget (adjust_max_memory); weights take 1, 1, 0.5, 0.25
//                        bytes per element for int8/float8/int4/int2 (quantized_element_size)
//   skip rule            get_modules_to_not_convert without add_default_skips, the base's
//                        rule: the config's modules_to_not_convert REPLACES the default skips
//                        (lm_head, tied weights, last parameter) when set, tied weights stay
//                        float regardless; should_convert_module matching.
//   modules              QuantoLinear (quanto_linear.h); with `activations`, a model with
//                        LayerNorm (transformers would add QLayerNorm) is UNIMPLEMENTED
//   calibration          with `activations`: optimum-quanto's Calibration() over the load's
//                        calibration texts (QuantoLinear::BeginCalibration)
//   pre-quantized        optimum-quanto's own serialization (QuantizedModelForCausalLM
//                        .save_pretrained: safetensors + quanto_qmap.json, which the loader
//                        passes as config.quantization_map): exactly the Linear modules of the
//                        map are converted, each with its qtypes, and load the saved state
//                        (activation scales included: no calibration). A map entry that is not
//                        a Linear of the model is INVALID_ARGUMENT.
//   save                 transformers cannot save quanto models (is_serializable False, kept
//                        in traits); SaveModel writes optimum-quanto's layout instead, which
//                        optimum-quanto's from_pretrained and this loader read back.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/linear_quantizer.h"
#include "quant/methods/quanto/quanto_config.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

class QuantoQuantizer final : public LinearQuantizer {
 public:
  // INVALID_ARGUMENT for a config transformers rejects (see QuantoConfig::Parse).
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  const QuantoConfig& config() const { return config_; }

  absl::Status ValidateEnvironment(const LoadTarget& target) override;
  double MaxMemoryFraction() const override { return 0.9; }
  absl::Status ProcessModelBeforeWeightLoading(models::Module& root,
                                               const LoadTarget& target) override;
  bool WantsCalibration() const override {
    return config_.activations.has_value() && !prequantized();
  }
  absl::Status Calibrate(models::Module& root,
                         const std::function<absl::Status()>& run_texts) override;
  // SaveModel writes optimum-quanto's own layout (QuantizedModelForCausalLM.save_pretrained):
  // every module's state under QLinear.state_dict() names, config.json without a
  // quantization_config, and quanto_qmap.json naming each converted module's qtypes.
  absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> SerializedState(
      const models::Module& root) const override {
    return ModuleState(root);
  }
  std::string SerializedConfigJson() const override { return ""; }
  std::map<std::string, std::string> ExtraSavedFiles() const override;

 protected:
  absl::StatusOr<std::shared_ptr<QuantizedLinear>> MakeLinear(const std::string& name,
                                                              const models::LinearOptions& options,
                                                              const LoadTarget& target) override;
  double EstimatedWeightBits(const std::string& name) const override;
  bool ShouldConvert(const std::string& name, const std::vector<std::string>& skip) const override;
  absl::Status PrequantizedSupport() const override { return absl::OkStatus(); }

 private:
  explicit QuantoQuantizer(QuantoConfig config);

  QuantoConfig config_;
};

// Registers "quanto".
absl::Status RegisterQuantoQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
