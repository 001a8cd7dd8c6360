#include "quant/methods/compressed_tensors/compressed_tensors_quantizer.h"

#include "common/status_macros.h"

namespace quantserve::quant {

CompressedTensorsQuantizer::CompressedTensorsQuantizer(CompressedTensorsConfig config)
    : config_(std::move(config)) {
  // quantizer_compressed_tensors.py: requires_calibration = True, is_serializable True,
  // is_trainable unless the (inference-only) FP8 kernel path is used.
  traits_.requires_calibration = true;
  traits_.is_serializable = true;
  traits_.is_trainable = !config_.use_optimized_inference;
}

absl::StatusOr<std::unique_ptr<Quantizer>> CompressedTensorsQuantizer::Create(
    const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(CompressedTensorsConfig config, CompressedTensorsConfig::Parse(config_json));
  return std::unique_ptr<Quantizer>(new CompressedTensorsQuantizer(std::move(config)));
}

const std::string& CompressedTensorsQuantizer::quant_method() const {
  static const std::string kName = "compressed-tensors";
  return kName;
}

absl::Status CompressedTensorsQuantizer::ValidateEnvironment(const LoadTarget& target) {
  if (!target.checkpoint_is_prequantized) {
    return absl::FailedPreconditionError(
        "compressed-tensors checkpoints are produced offline by llm-compressor (calibration with "
        "observers, GPTQ/AWQ modifiers), so transformers only loads pre-quantized "
        "compressed-tensors checkpoints (requires_calibration) and this checkpoint has no "
        "quantization_config. Quantize offline with llm-compressor (oneshot) and load the "
        "result, or use a method that quantizes at load: bitsandbytes, hqq, quanto, eetq, "
        "fbgemm_fp8, torchao");
  }
  return absl::UnimplementedError(
      "loading pre-quantized compressed-tensors checkpoints is not supported yet");
}

absl::Status RegisterCompressedTensorsQuantizer(QuantizerRegistry& registry) {
  return registry.Register("compressed-tensors", &CompressedTensorsQuantizer::Create);
}

}  // namespace quantserve::quant
