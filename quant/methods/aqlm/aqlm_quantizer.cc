#include "quant/methods/aqlm/aqlm_quantizer.h"

#include "common/status_macros.h"
#include "quant/methods/aqlm/aqlm_config.h"
#include "quant/offline_quantizer.h"

namespace quantserve::quant {

absl::StatusOr<std::unique_ptr<Quantizer>> CreateAqlmQuantizer(const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(AqlmConfig config, AqlmConfig::Parse(config_json));
  return OfflineQuantizer::Create({
      .quant_method = "aqlm",
      // quantizer_aqlm.py: requires_calibration = True, is_serializable True, is_trainable with
      // aqlm >= 1.0.2 (every current release).
      .traits = {.requires_calibration = true, .is_serializable = true, .is_trainable = true},
      .normalized_config_json = config.ToJson(),
      .why_offline =
          "AQLM needs calibration data: its codebooks are learned offline (additive quantization "
          "over calibration activations), so transformers only loads pre-quantized AQLM "
          "checkpoints (requires_calibration) and this checkpoint has no quantization_config. "
          "Quantize offline with the AQLM repository's main.py and load the result",
  });
}

absl::Status RegisterAqlmQuantizer(QuantizerRegistry& registry) {
  return registry.Register("aqlm", &CreateAqlmQuantizer);
}

}  // namespace quantserve::quant
