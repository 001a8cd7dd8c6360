#pragma once
// AqlmQuantizer: the `aqlm` row of the registry (transformers' AqlmHfQuantizer).
//
// AQLM is calibration-only (requires_calibration): its codebooks are learned offline on
// calibration data, so an unquantized checkpoint is FAILED_PRECONDITION with the reason.
// Loading AQLM checkpoints (codes/codebooks/scales) is not implemented yet: UNIMPLEMENTED.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/methods/aqlm/aqlm_config.h"
#include "quant/quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

class AqlmQuantizer final : public Quantizer {
 public:
  // INVALID_ARGUMENT when `config_json` is not a valid AqlmConfig.
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  const std::string& quant_method() const override;
  const QuantizerTraits& traits() const override;
  std::string NormalizedConfigJson() const override { return config_.ToJson(); }
  absl::Status ValidateEnvironment(const LoadTarget& target) override;

  const AqlmConfig& config() const { return config_; }

 private:
  explicit AqlmQuantizer(AqlmConfig config) : config_(std::move(config)) {}
  AqlmConfig config_;
};

// Registers "aqlm".
absl::Status RegisterAqlmQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
