#pragma once
// TorchAoQuantizer: transformers 5.23's TorchAoHfQuantizer. Quantizes at load only (no
// calibration); each converted Linear gets the torchao config TorchAoConfig::ConfigFor picks.
//
// Which Linear weights it quantizes, as param_needs_quantization + TorchAoQuantize do:
//   * the skip list is modules_to_not_convert when given (transformers then adds no default
//     skips), else the default skips (lm_head, tied weights, the last parameter);
//   * the list is matched against the PARAMETER name "<module>.weight" (should_convert_module),
//     so a bare suffix like "o_proj" skips nothing ("...o_proj.weight" does not end with it),
//     while prefixes ("model.layers.0") and regexes reaching a boundary do;
//   * tied weights are never quantized (they are not in the checkpoint; transformers re-ties
//     them to the float source);
//   * FqnToConfig leaves a module in float when no key matches or its config is null;
//   * Int4WeightOnlyConfig leaves a weight whose in_features is not a multiple of group_size
//     in float (torchao logs and skips it).
// Pre-quantized checkpoints (save_pretrained(safe_serialization=True) with torchao >= 0.14):
// the flattened tensors "<module>._weight_qdata/_scale/_zero_point" (or 0.14's
// "<module>.weight:qdata", ...) of the module kinds in torchao_linear.h, plus torchao's JSON
// in the safetensors "__metadata__" (LoadTarget::checkpoint_metadata). A Linear the metadata
// lists as a plain "Tensor" stays float; one whose subclass or block_size contradicts the
// quantization_config is INVALID_ARGUMENT. Save writes the same names and metadata
// (SafetensorsMetadata: "tensor_names", one entry per state-dict name, "format": "pt").
// UpdateTorchDtype keeps the requested dtype: 5.23 has no update_dtype (4.x forced bfloat16
// for the int4_weight_only string only when no dtype was given, which cannot happen here).

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/linear_quantizer.h"
#include "quant/methods/torchao/torchao_config.h"
#include "quant/methods/torchao/torchao_linear.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

class TorchAoQuantizer final : public LinearQuantizer {
 public:
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  const TorchAoConfig& config() const { return config_; }

  absl::Status ProcessModelBeforeWeightLoading(models::Module& root,
                                               const LoadTarget& target) override;
  // adjust_max_memory: torchao keeps 10% of a max_memory budget for quantization buffers.
  double MaxMemoryFraction() const override { return 0.9; }
  std::map<std::string, std::string> SafetensorsMetadata(
      const std::vector<std::string>& tensor_names) const override;

 protected:
  absl::StatusOr<std::shared_ptr<QuantizedLinear>> MakeLinear(const std::string& name,
                                                              const models::LinearOptions& options,
                                                              const LoadTarget& target) override;
  std::vector<std::string> ModulesToNotConvert(const models::Module& root) const override;
  bool ShouldConvert(const std::string& name, const std::vector<std::string>& skip) const override;
  // quantized_element_size: 0.5 bytes when the quant_type class name has "4weight" in it
  // (Int4WeightOnlyConfig), else 1 byte (FqnToConfig included), as transformers estimates.
  double EstimatedWeightBits(const std::string& name) const override;
  absl::Status PrequantizedSupport() const override { return absl::OkStatus(); }

 private:
  explicit TorchAoQuantizer(TorchAoConfig config);
  // INVALID_ARGUMENT when the checkpoint's metadata for "<name>.weight" names another tensor
  // subclass or block_size than `module` (built from the quantization_config) holds.
  absl::Status CheckMetadata(const std::string& name, const TorchAoLinearBase& module) const;

  TorchAoConfig config_;
  std::unordered_set<std::string> tied_modules_;          // modules whose weight is tied
  std::unordered_map<std::string, int64_t> in_features_;  // Linear name -> in_features
  std::vector<std::string> tied_params_;                  // tied parameter names, model order
  std::vector<std::string> state_names_;  // the float skeleton's parameter names, model order
  std::map<std::string, std::string> checkpoint_metadata_;  // safetensors __metadata__
};

absl::Status RegisterTorchAoQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
