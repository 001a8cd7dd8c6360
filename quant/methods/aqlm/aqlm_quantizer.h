#pragma once
// The `aqlm` row of the registry: transformers' AqlmHfQuantizer (quantizer_aqlm.py +
// integrations/aqlm.py, transformers 5.23) over AqlmLinear.
//
// AQLM is calibration-only (requires_calibration): its codebooks are learned offline, so an
// unquantized checkpoint is FAILED_PRECONDITION with the reason. Pre-quantized checkpoints
// load into AqlmLinear (codes/codebooks/scales, aqlm_linear.h) and save back unchanged.
//
// Module selection: every Linear is converted (AQLM has no default skips) except those listed
// in linear_weights_not_to_quantize, and tied weights (kept float, as everywhere). An entry
// skips module M when it is "M.weight" (the documented meaning, transformers 4.x and every
// published AQLM checkpoint) or when transformers 5.23's should_convert_module pattern rule
// matches M (5.23 passes the list to it unchanged, so there only module-name patterns skip).
// AQLM has no loading attributes: a request config is validated and otherwise ignored.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/linear_quantizer.h"
#include "quant/methods/aqlm/aqlm_config.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

class AqlmQuantizer final : public LinearQuantizer {
 public:
  // INVALID_ARGUMENT when `config_json` is not a valid AqlmConfig.
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  absl::Status ValidateEnvironment(const LoadTarget& target) override;

 protected:
  absl::StatusOr<std::shared_ptr<QuantizedLinear>> MakeLinear(const std::string& name,
                                                              const models::LinearOptions& options,
                                                              const LoadTarget& target) override;
  bool ShouldConvert(const std::string& name, const std::vector<std::string>& skip) const override;
  absl::Status PrequantizedSupport() const override { return absl::OkStatus(); }

 private:
  explicit AqlmQuantizer(AqlmConfig config);
  AqlmConfig config_;
};

// INVALID_ARGUMENT when `config_json` is not a valid AqlmConfig.
absl::StatusOr<std::unique_ptr<Quantizer>> CreateAqlmQuantizer(const std::string& config_json);

// Registers "aqlm".
absl::Status RegisterAqlmQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
