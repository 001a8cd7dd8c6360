#include "quant/methods/aqlm/aqlm_quantizer.h"

#include "common/status_macros.h"

namespace quantserve::quant {

absl::StatusOr<std::unique_ptr<Quantizer>> AqlmQuantizer::Create(const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(AqlmConfig config, AqlmConfig::Parse(config_json));
  return std::unique_ptr<Quantizer>(new AqlmQuantizer(std::move(config)));
}

const std::string& AqlmQuantizer::quant_method() const {
  static const std::string kName = "aqlm";
  return kName;
}

const QuantizerTraits& AqlmQuantizer::traits() const {
  // quantizer_aqlm.py: requires_calibration = True, is_serializable True, is_trainable with
  // aqlm >= 1.0.2 (every current release).
  static const QuantizerTraits kTraits{
      .requires_calibration = true, .is_serializable = true, .is_trainable = true};
  return kTraits;
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
  return absl::UnimplementedError("loading pre-quantized aqlm checkpoints is not supported yet");
}

absl::Status RegisterAqlmQuantizer(QuantizerRegistry& registry) {
  return registry.Register("aqlm", &AqlmQuantizer::Create);
}

}  // namespace quantserve::quant
