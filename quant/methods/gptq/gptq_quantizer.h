#pragma once
// GptqQuantizer: the `gptq` row of the registry (transformers' GptqHfQuantizer).
//
// transformers can quantize an unquantized checkpoint with GPTQ only by running optimum's GPTQ
// over a calibration `dataset` at load; quantserve does not, so an unquantized checkpoint is
// FAILED_PRECONDITION with the reason. Loading GPTQ checkpoints (qweight/qzeros/scales/g_idx)
// is not implemented yet: UNIMPLEMENTED. Traits are GptqHfQuantizer's: requires_calibration
// false, serializable, trainable.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/methods/gptq/gptq_config.h"
#include "quant/quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

class GptqQuantizer final : public Quantizer {
 public:
  // INVALID_ARGUMENT when `config_json` is not a valid GPTQConfig.
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  const std::string& quant_method() const override;
  const QuantizerTraits& traits() const override;
  std::string NormalizedConfigJson() const override { return config_.ToJson(); }
  absl::Status ValidateEnvironment(const LoadTarget& target) override;

  const GptqConfig& config() const { return config_; }

 private:
  explicit GptqQuantizer(GptqConfig config) : config_(std::move(config)) {}
  GptqConfig config_;
};

// Registers "gptq".
absl::Status RegisterGptqQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
