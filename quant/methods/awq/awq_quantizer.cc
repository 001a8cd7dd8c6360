#include "quant/methods/awq/awq_quantizer.h"

#include "common/status_macros.h"

namespace quantserve::quant {

AwqQuantizer::AwqQuantizer(AwqConfig config) : config_(std::move(config)) {
  // quantizer_awq.py: requires_calibration = True; is_serializable is False for the exllama
  // backends; is_trainable needs gptqmodel >= 5.0.0, which every current install has.
  traits_.requires_calibration = true;
  traits_.is_serializable =
      config_.gptq.backend != "exllama_v1" && config_.gptq.backend != "exllama_v2";
  traits_.is_trainable = true;
}

absl::StatusOr<std::unique_ptr<Quantizer>> AwqQuantizer::Create(const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(AwqConfig config, AwqConfig::Parse(config_json));
  return std::unique_ptr<Quantizer>(new AwqQuantizer(std::move(config)));
}

const std::string& AwqQuantizer::quant_method() const {
  static const std::string kName = "awq";
  return kName;
}

absl::Status AwqQuantizer::ValidateEnvironment(const LoadTarget& target) {
  if (!target.checkpoint_is_prequantized) {
    return absl::FailedPreconditionError(
        "AWQ needs calibration data: its per-channel scales are searched on calibration "
        "activations offline, so transformers only loads pre-quantized AWQ checkpoints "
        "(requires_calibration) and this checkpoint has no quantization_config. Quantize "
        "offline with GPTQModel or llm-compressor (AWQ) and load the result, or use a method "
        "that quantizes at load: bitsandbytes, hqq, quanto, eetq, fbgemm_fp8, torchao");
  }
  return absl::UnimplementedError("loading pre-quantized awq checkpoints is not supported yet");
}

absl::Status RegisterAwqQuantizer(QuantizerRegistry& registry) {
  return registry.Register("awq", &AwqQuantizer::Create);
}

}  // namespace quantserve::quant
