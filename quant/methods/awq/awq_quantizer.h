#pragma once
// AwqQuantizer: the `awq` row of the registry (transformers' AwqQuantizer).
//
// AWQ is calibration-only (requires_calibration): its per-channel scales are searched on
// calibration activations offline, so an unquantized checkpoint is FAILED_PRECONDITION with the
// reason. Loading AWQ checkpoints (qweight/qzeros/scales) is not implemented yet:
// UNIMPLEMENTED. is_serializable is false for the exllama backends, as in transformers.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/methods/awq/awq_config.h"
#include "quant/quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

class AwqQuantizer final : public Quantizer {
 public:
  // INVALID_ARGUMENT when `config_json` is not a valid AwqConfig.
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  const std::string& quant_method() const override;
  const QuantizerTraits& traits() const override { return traits_; }
  std::string NormalizedConfigJson() const override { return config_.ToJson(); }
  absl::Status ValidateEnvironment(const LoadTarget& target) override;

  const AwqConfig& config() const { return config_; }

 private:
  explicit AwqQuantizer(AwqConfig config);
  AwqConfig config_;
  QuantizerTraits traits_;
};

// Registers "awq".
absl::Status RegisterAwqQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
