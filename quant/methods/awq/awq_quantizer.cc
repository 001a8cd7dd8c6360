#include "quant/methods/awq/awq_quantizer.h"

#include "common/status_macros.h"
#include "quant/methods/awq/awq_config.h"
#include "quant/offline_quantizer.h"

namespace quantserve::quant {

absl::StatusOr<std::unique_ptr<Quantizer>> CreateAwqQuantizer(const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(AwqConfig config, AwqConfig::Parse(config_json));
  const std::string& backend = config.gptq.backend;
  return OfflineQuantizer::Create({
      .quant_method = "awq",
      // quantizer_awq.py: requires_calibration = True; is_serializable is False for the exllama
      // backends; is_trainable needs gptqmodel >= 5.0.0, which every current install has.
      .traits = {.requires_calibration = true,
                 .is_serializable = backend != "exllama_v1" && backend != "exllama_v2",
                 .is_trainable = true},
      .normalized_config_json = config.ToJson(),
      .why_offline =
          "AWQ needs calibration data: its per-channel scales are searched on calibration "
          "activations offline, so transformers only loads pre-quantized AWQ checkpoints "
          "(requires_calibration) and this checkpoint has no quantization_config. Quantize "
          "offline with GPTQModel or llm-compressor (AWQ) and load the result",
  });
}

absl::Status RegisterAwqQuantizer(QuantizerRegistry& registry) {
  return registry.Register("awq", &CreateAwqQuantizer);
}

}  // namespace quantserve::quant
