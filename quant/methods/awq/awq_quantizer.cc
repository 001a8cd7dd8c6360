#include "quant/methods/awq/awq_quantizer.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "quant/methods/awq/awq_linear.h"
#include "quant/module_match.h"

namespace quantserve::quant {
namespace {

QuantizerTraits AwqTraits(const AwqConfig& config) {
  // quantizer_awq.py: requires_calibration = True; is_serializable is False for the exllama
  // backends; is_trainable needs gptqmodel >= 5.0.0, which every current install has.
  QuantizerTraits t;
  t.requires_calibration = true;
  t.is_serializable = config.gptq.backend != "exllama_v1" && config.gptq.backend != "exllama_v2";
  t.is_trainable = true;
  return t;
}

}  // namespace

AwqQuantizer::AwqQuantizer(AwqConfig config)
    : LinearQuantizer("awq", AwqTraits(config), config.ToJson(), config.modules_to_not_convert),
      config_(std::move(config)) {}

absl::StatusOr<std::unique_ptr<Quantizer>> AwqQuantizer::Create(const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(AwqConfig config, AwqConfig::Parse(config_json));
  return std::unique_ptr<Quantizer>(new AwqQuantizer(std::move(config)));
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
  return LinearQuantizer::ValidateEnvironment(target);
}

absl::Status AwqQuantizer::PrequantizedSupport() const {
  const GptqConfig& g = config_.gptq;
  if (g.format != "gemm" && g.format != "gemv") {
    return absl::UnimplementedError(absl::StrCat(
        "awq checkpoints in format '", g.format, "' are not supported (gemm and gemv are)"));
  }
  if (g.bits != 4) {
    return absl::UnimplementedError(
        absl::StrCat("awq checkpoints with bits ", g.bits, " are not supported (AWQ packs 4-bit)"));
  }
  if (!config_.zero_point) {
    return absl::UnimplementedError(
        "awq checkpoints with zero_point false are not supported (AutoAWQ's packers require "
        "zeros, so no reference layout exists)");
  }
  return absl::OkStatus();
}

std::vector<std::string> AwqQuantizer::ModulesToNotConvert(const models::Module& root) const {
  // get_modules_to_not_convert(..., add_default_skips=True): the default skips always, plus
  // the config's list.
  std::vector<std::string> skip = DefaultModulesToNotConvert(root);
  if (modules_to_not_convert().has_value()) {
    skip.insert(skip.end(), modules_to_not_convert()->begin(), modules_to_not_convert()->end());
  }
  return skip;
}

absl::StatusOr<std::shared_ptr<QuantizedLinear>> AwqQuantizer::MakeLinear(
    const std::string& name, const models::LinearOptions& options, const LoadTarget& target) {
  AwqLinearOptions awq;
  awq.packing = config_.gptq.format == "gemv" ? AwqPacking::kGemv : AwqPacking::kGemm;
  awq.group_size = config_.gptq.group_size;
  auto linear = AwqLinear::Create(options, awq);
  if (!linear.ok()) {
    return absl::Status(linear.status().code(),
                        absl::StrCat("module ", name, ": ", linear.status().message()));
  }
  return std::shared_ptr<QuantizedLinear>(*std::move(linear));
}

double AwqQuantizer::EstimatedWeightBits(const std::string& name) const {
  // 4-bit codes + an fp16 scale and a 4-bit zero per group.
  const double group = config_.gptq.group_size > 0 ? config_.gptq.group_size : 1024.0;
  return 4.0 + 20.0 / group;
}

absl::StatusOr<std::unique_ptr<Quantizer>> CreateAwqQuantizer(const std::string& config_json) {
  return AwqQuantizer::Create(config_json);
}

absl::Status RegisterAwqQuantizer(QuantizerRegistry& registry) {
  // GPTQConfig.get_loading_attributes (inherited by AwqConfig).
  return registry.Register("awq", &AwqQuantizer::Create, {"max_input_length", "backend"});
}

}  // namespace quantserve::quant
