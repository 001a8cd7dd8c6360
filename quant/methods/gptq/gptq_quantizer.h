#pragma once
// The `gptq` row of the registry: transformers' GptqHfQuantizer (with optimum's GPTQQuantizer
// and GPTQModel underneath) as a LinearQuantizer.
//
// Pre-quantized checkpoints (qweight/qzeros/scales/g_idx, GptqLinear) load: the Linears
// converted are exactly optimum's convert_model choice: every Linear whose name starts with
// the block name (config block_name_to_quantize, else the first of optimum's BLOCK_PATTERNS
// that some module name contains: "model.layers" for Llama), kept only when its name ends with
// one of modules_in_block_to_quantize's entries when that list is given. lm_head and the
// embeddings are never converted; modules_to_not_convert does not exist for GPTQ.
//
// transformers can quantize an unquantized checkpoint with GPTQ only by running optimum's GPTQ
// over a calibration `dataset` at load; quantserve does not, so an unquantized checkpoint is
// FAILED_PRECONDITION with the reason. Traits are GptqHfQuantizer's: requires_calibration
// false, serializable, trainable. Loading attributes (a request may override them on a
// pre-quantized checkpoint): backend, max_input_length.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/linear_quantizer.h"
#include "quant/methods/gptq/gptq_config.h"
#include "quant/quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

class GptqQuantizer final : public LinearQuantizer {
 public:
  // INVALID_ARGUMENT when `config_json` is not a valid GptqConfig.
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  absl::Status ProcessModelBeforeWeightLoading(models::Module& root,
                                               const LoadTarget& target) override;
  const GptqConfig& config() const { return config_; }

 protected:
  absl::StatusOr<std::shared_ptr<QuantizedLinear>> MakeLinear(
      const std::string& name, const models::LinearOptions& options,
      const LoadTarget& target) override;
  std::vector<std::string> ModulesToNotConvert(const models::Module& root) const override {
    return {};
  }
  bool ShouldConvert(const std::string& name,
                     const std::vector<std::string>& skip) const override;
  double EstimatedWeightBits(const std::string& name) const override;
  absl::Status PrequantizedSupport() const override { return absl::OkStatus(); }

 private:
  explicit GptqQuantizer(GptqConfig config);

  GptqConfig config_;
  std::string block_name_;  // resolved in ProcessModelBeforeWeightLoading
};

// INVALID_ARGUMENT when `config_json` is not a valid GptqConfig.
absl::StatusOr<std::unique_ptr<Quantizer>> CreateGptqQuantizer(const std::string& config_json);

// Registers "gptq" with its loading attributes.
absl::Status RegisterGptqQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
