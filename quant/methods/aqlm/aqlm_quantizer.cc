#include "quant/methods/aqlm/aqlm_quantizer.h"

#include <algorithm>

#include "common/status_macros.h"
#include "quant/methods/aqlm/aqlm_linear.h"
#include "quant/module_match.h"

namespace quantserve::quant {
namespace {

QuantizerTraits AqlmTraits() {
  // quantizer_aqlm.py: requires_calibration = True, is_serializable True, is_trainable with
  // aqlm >= 1.0.2 (every current release).
  QuantizerTraits t;
  t.requires_calibration = true;
  t.is_serializable = true;
  t.is_trainable = true;
  return t;
}

}  // namespace

AqlmQuantizer::AqlmQuantizer(AqlmConfig config)
    : LinearQuantizer("aqlm", AqlmTraits(), config.ToJson(),
                      // Always a list (possibly empty): AQLM has no default skips.
                      config.linear_weights_not_to_quantize),
      config_(std::move(config)) {}

absl::StatusOr<std::unique_ptr<Quantizer>> AqlmQuantizer::Create(const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(AqlmConfig config, AqlmConfig::Parse(config_json));
  return std::unique_ptr<Quantizer>(new AqlmQuantizer(std::move(config)));
}

absl::Status AqlmQuantizer::ValidateEnvironment(const LoadTarget& target) {
  if (!target.checkpoint_is_prequantized) {
    return absl::FailedPreconditionError(
        "AQLM needs calibration data: its codebooks are learned offline (additive quantization "
        "over calibration activations), so transformers only loads pre-quantized AQLM "
        "checkpoints (requires_calibration) and this checkpoint has no quantization_config. "
        "Quantize offline with the AQLM repository's main.py and load the result, or use a "
        "method that quantizes at load: bitsandbytes, hqq, quanto, eetq, fbgemm_fp8, torchao");
  }
  return LinearQuantizer::ValidateEnvironment(target);
}

absl::StatusOr<std::shared_ptr<QuantizedLinear>> AqlmQuantizer::MakeLinear(
    const std::string& name, const models::LinearOptions& options, const LoadTarget& target) {
  QS_ASSIGN_OR_RETURN(auto m, AqlmLinear::Create(name, options, config_));
  return std::shared_ptr<QuantizedLinear>(std::move(m));
}

bool AqlmQuantizer::ShouldConvert(const std::string& name,
                                  const std::vector<std::string>& skip) const {
  if (std::find(skip.begin(), skip.end(), name + ".weight") != skip.end()) return false;
  return LinearQuantizer::ShouldConvert(name, skip);
}

absl::StatusOr<std::unique_ptr<Quantizer>> CreateAqlmQuantizer(const std::string& config_json) {
  return AqlmQuantizer::Create(config_json);
}

absl::Status RegisterAqlmQuantizer(QuantizerRegistry& registry) {
  return registry.Register("aqlm", &CreateAqlmQuantizer);
}

}  // namespace quantserve::quant
