#pragma once
// The `awq` row of the registry: transformers 5.23's AwqQuantizer.
//
// AWQ is calibration-only (requires_calibration): its per-channel scales are searched on
// calibration activations offline, so an unquantized checkpoint is FAILED_PRECONDITION with the
// reason. A pre-quantized checkpoint loads into AwqLinear modules (awq_linear.h) for the `gemm`
// and `gemv` formats, 4-bit, zero_point true; other formats (gemv_fast, llm-awq), other bit
// widths and zero_point false are UNIMPLEMENTED (no library we can run writes them).
// Converted modules: every Linear except transformers' default skips plus the config's
// modules_to_not_convert (AWQ passes add_default_skips=True). A request's quantization_config
// may override the loading attributes `backend` and `max_input_length` (GPTQConfig's
// get_loading_attributes, inherited by AwqConfig). is_serializable is false for the exllama
// backends, as in transformers; SaveModel writes the loaded tensors and AwqConfig.to_dict().

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/linear_quantizer.h"
#include "quant/methods/awq/awq_config.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

class AwqQuantizer final : public LinearQuantizer {
 public:
  // INVALID_ARGUMENT when `config_json` is not a valid AwqConfig.
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  absl::Status ValidateEnvironment(const LoadTarget& target) override;
  const AwqConfig& config() const { return config_; }

 protected:
  absl::StatusOr<std::shared_ptr<QuantizedLinear>> MakeLinear(const std::string& name,
                                                              const models::LinearOptions& options,
                                                              const LoadTarget& target) override;
  std::vector<std::string> ModulesToNotConvert(const models::Module& root) const override;
  absl::Status PrequantizedSupport() const override;
  double EstimatedWeightBits(const std::string& name) const override;

 private:
  explicit AwqQuantizer(AwqConfig config);
  AwqConfig config_;
};

// INVALID_ARGUMENT when `config_json` is not a valid AwqConfig.
absl::StatusOr<std::unique_ptr<Quantizer>> CreateAwqQuantizer(const std::string& config_json);

// Registers "awq" with its loading attributes.
absl::Status RegisterAwqQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
