#include "quant/methods/gptq/gptq_quantizer.h"

#include "common/status_macros.h"

namespace quantserve::quant {

absl::StatusOr<std::unique_ptr<Quantizer>> GptqQuantizer::Create(const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(GptqConfig config, GptqConfig::Parse(config_json));
  return std::unique_ptr<Quantizer>(new GptqQuantizer(std::move(config)));
}

const std::string& GptqQuantizer::quant_method() const {
  static const std::string kName = "gptq";
  return kName;
}

const QuantizerTraits& GptqQuantizer::traits() const {
  // quantizer_gptq.py: requires_calibration = False (it calibrates at load through optimum),
  // is_trainable True, is_serializable True.
  static const QuantizerTraits kTraits{
      .requires_calibration = false, .is_serializable = true, .is_trainable = true};
  return kTraits;
}

absl::Status GptqQuantizer::ValidateEnvironment(const LoadTarget& target) {
  if (!target.checkpoint_is_prequantized) {
    return absl::FailedPreconditionError(
        "GPTQ needs a calibration dataset and a GPTQ run (transformers runs optimum's GPTQ over "
        "`dataset` when it loads an unquantized checkpoint); quantserve does not run GPTQ at "
        "load. Quantize offline with GPTQModel and load the result, or use a method that "
        "quantizes at load: bitsandbytes, hqq, quanto, eetq, fbgemm_fp8, torchao");
  }
  return absl::UnimplementedError("loading pre-quantized gptq checkpoints is not supported yet");
}

absl::Status RegisterGptqQuantizer(QuantizerRegistry& registry) {
  return registry.Register("gptq", &GptqQuantizer::Create);
}

}  // namespace quantserve::quant
