#include "quant/methods/compressed_tensors/compressed_tensors_quantizer.h"

#include "common/status_macros.h"
#include "quant/methods/compressed_tensors/compressed_tensors_config.h"
#include "quant/offline_quantizer.h"

namespace quantserve::quant {

absl::StatusOr<std::unique_ptr<Quantizer>> CreateCompressedTensorsQuantizer(
    const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(CompressedTensorsConfig config, CompressedTensorsConfig::Parse(config_json));
  return OfflineQuantizer::Create({
      .quant_method = "compressed-tensors",
      // quantizer_compressed_tensors.py: requires_calibration = True, is_serializable True,
      // is_trainable unless the (inference-only) FP8 kernel path is used.
      .traits = {.requires_calibration = true,
                 .is_serializable = true,
                 .is_trainable = !config.use_optimized_inference},
      .normalized_config_json = config.ToJson(),
      .why_offline =
          "compressed-tensors checkpoints are produced offline by llm-compressor (calibration "
          "with observers, GPTQ/AWQ modifiers), so transformers only loads pre-quantized "
          "compressed-tensors checkpoints (requires_calibration) and this checkpoint has no "
          "quantization_config. Quantize offline with llm-compressor (oneshot) and load the "
          "result",
  });
}

absl::Status RegisterCompressedTensorsQuantizer(QuantizerRegistry& registry) {
  return registry.Register("compressed-tensors", &CreateCompressedTensorsQuantizer);
}

}  // namespace quantserve::quant
