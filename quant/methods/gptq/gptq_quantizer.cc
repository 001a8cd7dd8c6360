#include "quant/methods/gptq/gptq_quantizer.h"

#include "common/status_macros.h"
#include "quant/methods/gptq/gptq_config.h"
#include "quant/offline_quantizer.h"

namespace quantserve::quant {

absl::StatusOr<std::unique_ptr<Quantizer>> CreateGptqQuantizer(const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(GptqConfig config, GptqConfig::Parse(config_json));
  return OfflineQuantizer::Create({
      .quant_method = "gptq",
      // quantizer_gptq.py: requires_calibration = False (it calibrates at load through
      // optimum), is_trainable True, is_serializable True.
      .traits = {.requires_calibration = false, .is_serializable = true, .is_trainable = true},
      .normalized_config_json = config.ToJson(),
      .why_offline =
          "GPTQ needs a calibration dataset and a GPTQ run (transformers runs optimum's GPTQ "
          "over `dataset` when it loads an unquantized checkpoint); quantserve does not run GPTQ "
          "at load. Quantize offline with GPTQModel and load the result",
  });
}

absl::Status RegisterGptqQuantizer(QuantizerRegistry& registry) {
  return registry.Register("gptq", &CreateGptqQuantizer);
}

}  // namespace quantserve::quant
