#pragma once
// HqqQuantizer: transformers 5.23's HqqHfQuantizer + prepare_for_hqq_linear, quantizing at load
// with hqq's HQQLinear (HqqLinear).
//
// Which Linear modules are converted is decided per *linear tag* (HqqLinearTag:
// "model.layers.3.mlp.up_proj" -> "mlp.up_proj"), exactly as prepare_for_hqq_linear does:
//   * linear_tags = tags of every Linear, minus skip_modules (exact tag equality, no
//     substrings or patterns, and no default skips beyond skip_modules' default ["lm_head"]);
//   * one config (no dynamic_config): every Linear whose tag is in linear_tags;
//   * per-tag config: if some key names a tag in linear_tags, every Linear whose tag has a
//     non-null entry, *including tags listed in skip_modules* (transformers re-adds them with
//     patch_params.update); a tag without an entry stays float. If no key names such a tag,
//     transformers hands each Linear the whole dict and HQQLinear fails: INVALID_ARGUMENT.
// A Linear whose weight is tied to another parameter (lm_head with tie_word_embeddings) is
// never quantized here: UNIMPLEMENTED when the config would convert it.
//
// Traits as HqqHfQuantizer: no calibration, serializable, trainable. The compute dtype is the
// requested one (5.23 has no update_dtype override).
//
// Pre-quantized checkpoints (config.json's quantization_config is HqqConfig.to_dict(), the
// safetensors hold each HQQLinear.state_dict(), as save_pretrained writes them) follow the
// same plan; each converted module registers hqq's state dict layout (HqqLinear). transformers
// 5.23 itself cannot load them (no HQQ load operations); hqq's HQQLinear.load_state_dict can,
// and is what we match. HqqConfig has no loading attributes: a request's other fields are
// ignored. SerializedConfigJson is to_dict(), as prepare_for_hqq_linear stores it.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/linear_quantizer.h"
#include "quant/methods/hqq/hqq_config.h"

namespace quantserve::quant {

class QuantizerRegistry;

class HqqQuantizer final : public LinearQuantizer {
 public:
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  absl::Status ProcessModelBeforeWeightLoading(models::Module& root,
                                               const LoadTarget& target) override;

  const HqqConfig& config() const { return config_; }

 protected:
  absl::StatusOr<std::shared_ptr<QuantizedLinear>> MakeLinear(const std::string& name,
                                                              const models::LinearOptions& options,
                                                              const LoadTarget& target) override;
  // The Linear modules the plan leaves float (for reporting); ShouldConvert follows the plan.
  std::vector<std::string> ModulesToNotConvert(const models::Module& root) const override;
  bool ShouldConvert(const std::string& name, const std::vector<std::string>& skip) const override;
  absl::Status PrequantizedSupport() const override { return absl::OkStatus(); }

 private:
  explicit HqqQuantizer(HqqConfig config);

  HqqConfig config_;
  // Module name -> its params, for every Linear to convert (set before the base swaps them).
  std::map<std::string, HqqWeightQuantParams> plan_;
  std::vector<std::string> not_converted_;  // the other Linear modules, in model order
};

absl::Status RegisterHqqQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
