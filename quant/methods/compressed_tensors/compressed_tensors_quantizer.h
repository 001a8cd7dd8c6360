#pragma once
// CompressedTensorsQuantizer: the `compressed-tensors` row of the registry (transformers'
// CompressedTensorsHfQuantizer).
//
// compressed-tensors checkpoints are written offline by llm-compressor (requires_calibration),
// so an unquantized checkpoint is FAILED_PRECONDITION with the reason. Loading them
// (weight_packed / weight_scale / weight_zero_point ...) is not implemented yet: UNIMPLEMENTED.
// Traits are transformers': serializable, trainable unless the FP8 kernel path
// (use_optimized_inference) is taken.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/methods/compressed_tensors/compressed_tensors_config.h"
#include "quant/quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

class CompressedTensorsQuantizer final : public Quantizer {
 public:
  // INVALID_ARGUMENT when `config_json` is not a valid CompressedTensorsConfig.
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  const std::string& quant_method() const override;
  const QuantizerTraits& traits() const override { return traits_; }
  std::string NormalizedConfigJson() const override { return config_.ToJson(); }
  absl::Status ValidateEnvironment(const LoadTarget& target) override;

  const CompressedTensorsConfig& config() const { return config_; }

 private:
  explicit CompressedTensorsQuantizer(CompressedTensorsConfig config);
  CompressedTensorsConfig config_;
  QuantizerTraits traits_;
};

// Registers "compressed-tensors".
absl::Status RegisterCompressedTensorsQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
