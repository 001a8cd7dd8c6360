#pragma once
// LinearQuantizer: the lifecycle shared by every method that swaps nn.Linear modules for its
// own QuantizedLinear and (when quantizing at load) quantizes each weight as it streams in.
//
//   ValidateEnvironment       calibration-only methods need a pre-quantized checkpoint
//   ProcessModelBefore...     on the meta skeleton, every Linear that ShouldConvert() accepts
//                             becomes MakeLinear(name, options)
//   CheckQuantizedParam       "<converted>.weight" of an unquantized checkpoint
//   CreateQuantizedParam      QuantizedLinear::QuantizeWeight; the float copy is dropped after
//
// and for a pre-quantized checkpoint (PrequantizedSupport() OK):
//
//   ProcessModelBefore...     MakeLinear with target.checkpoint_is_prequantized: the module
//                             registers its serialized layout
//   CheckQuantizedParam       every tensor of a converted module
//   CreateQuantizedParam      QuantizedLinear::LoadSerializedTensor
//   ProcessModelAfter...      QuantizedLinear::FinishSerializedLoad for each converted module
//   SerializedState           the float parameters + each module's SerializedTensors
//
// A method subclasses it with its parsed config, its traits and MakeLinear; it overrides
// ModulesToNotConvert/ShouldConvert when its skip rule differs from transformers' default.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/layers.h"
#include "quant/quantized_linear.h"
#include "quant/quantizer.h"

namespace quantserve::quant {

class LinearQuantizer : public Quantizer {
 public:
  const std::string& quant_method() const override { return method_; }
  const QuantizerTraits& traits() const override { return traits_; }
  std::string NormalizedConfigJson() const override { return normalized_config_json_; }

  absl::Status ValidateEnvironment(const LoadTarget& target) override;
  absl::Status ProcessModelBeforeWeightLoading(models::Module& root,
                                               const LoadTarget& target) override;
  int64_t EstimatedParamBytes(const std::string& name, const at::Tensor& meta) const override;
  bool CheckQuantizedParam(const std::string& name) const override;
  absl::Status CreateQuantizedParam(const std::string& name, const at::Tensor& value,
                                    models::ParamSlot& slot, const LoadTarget& target) override;
  absl::Status ProcessModelAfterWeightLoading(models::Module& root,
                                              const LoadTarget& target) override;
  absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> SerializedState(
      const models::Module& root) const override;

  // Dotted names of the converted modules, in model order (after ProcessModelBefore...).
  std::vector<std::string> converted_modules() const;
  // The converted module at `name`, or null.
  QuantizedLinear* converted_module(const std::string& name) const;

 protected:
  // SerializedState without the is_serializable check: the float parameters and each
  // converted module's SerializedTensors, by checkpoint name.
  absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> ModuleState(
      const models::Module& root) const;

  LinearQuantizer(std::string method, QuantizerTraits traits, std::string normalized_config_json,
                  std::optional<std::vector<std::string>> modules_to_not_convert);

  // The method's module for the Linear at `name` (on the meta device; `options.dtype` is the
  // compute dtype after UpdateTorchDtype).
  virtual absl::StatusOr<std::shared_ptr<QuantizedLinear>> MakeLinear(
      const std::string& name, const models::LinearOptions& options, const LoadTarget& target) = 0;

  // transformers' get_modules_to_not_convert: the config's modules_to_not_convert when given
  // (plus tied weights, which we never convert), else the default skips (lm_head, tied,
  // last parameter).
  virtual std::vector<std::string> ModulesToNotConvert(const models::Module& root) const;
  // Whether the Linear at `name` is converted, given ModulesToNotConvert(root).
  virtual bool ShouldConvert(const std::string& name, const std::vector<std::string>& skip) const;

  // Average bits per weight element of the converted module `name` once quantized, scales
  // and zeros included (for the fit estimate; 8 unless the method says otherwise).
  virtual double EstimatedWeightBits(const std::string& name) const { return 8.0; }

  // OK when this method loads its pre-quantized checkpoints; otherwise the reason
  // (UNIMPLEMENTED by default), returned by ValidateEnvironment.
  virtual absl::Status PrequantizedSupport() const;
  bool prequantized() const { return prequantized_; }
  // The converted module owning checkpoint tensor `name`, with `local` set to the rest of the
  // name ("model.layers.0.mlp.up_proj.weight.absmax" -> up_proj, "weight.absmax"); or null.
  QuantizedLinear* OwningModule(const std::string& name, std::string* local) const;

  // Set when quantizing an unquantized checkpoint is impossible here (GPTQ without running
  // GPTQ, AWQ, ...): ValidateEnvironment returns FAILED_PRECONDITION with this reason.
  std::string on_the_fly_unsupported_reason_;
  const std::optional<std::vector<std::string>>& modules_to_not_convert() const {
    return modules_to_not_convert_;
  }

 private:
  std::string method_;
  QuantizerTraits traits_;
  std::string normalized_config_json_;
  std::optional<std::vector<std::string>> modules_to_not_convert_;
  bool prequantized_ = false;
  std::map<std::string, std::shared_ptr<QuantizedLinear>> converted_;  // by module name
  std::vector<std::string> order_;
};

}  // namespace quantserve::quant
