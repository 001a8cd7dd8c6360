#include "quant/methods/gptq/gptq_quantizer.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "quant/methods/gptq/gptq_linear.h"

namespace quantserve::quant {
namespace {

// optimum/gptq/constants.py BLOCK_PATTERNS, tried in order (substring match).
const char* const kBlockPatterns[] = {"transformer.h", "model.decoder.layers", "gpt_neox.layers",
                                      "model.layers",  "h",                    "decoder.layers",
                                      "layers"};

QuantizerTraits GptqTraits() {
  QuantizerTraits t;
  // quantizer_gptq.py: requires_calibration = False (it calibrates at load through optimum),
  // is_trainable True, is_serializable True.
  t.requires_calibration = false;
  t.is_serializable = true;
  t.is_trainable = true;
  return t;
}

}  // namespace

GptqQuantizer::GptqQuantizer(GptqConfig config)
    : LinearQuantizer("gptq", GptqTraits(), config.ToJson(), std::nullopt),
      config_(std::move(config)) {
  on_the_fly_unsupported_reason_ =
      "GPTQ needs a calibration dataset and a GPTQ run (transformers runs optimum's GPTQ over "
      "`dataset` when it loads an unquantized checkpoint); quantserve does not run GPTQ at load. "
      "Quantize offline with GPTQModel and load the result, or use a method that quantizes at "
      "load: bitsandbytes, hqq, quanto, eetq, fbgemm_fp8, torchao";
}

absl::StatusOr<std::unique_ptr<Quantizer>> GptqQuantizer::Create(const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(GptqConfig config, GptqConfig::Parse(config_json));
  return std::unique_ptr<Quantizer>(new GptqQuantizer(std::move(config)));
}

absl::Status GptqQuantizer::ProcessModelBeforeWeightLoading(models::Module& root,
                                                            const LoadTarget& target) {
  if (config_.block_name_to_quantize.has_value()) {
    block_name_ = *config_.block_name_to_quantize;
  } else {
    block_name_.clear();
    const auto modules = root.NamedModules();
    for (const char* pattern : kBlockPatterns) {
      for (const auto& m : modules) {
        if (absl::StrContains(m.name, pattern)) {
          block_name_ = pattern;
          break;
        }
      }
      if (!block_name_.empty()) break;
    }
    if (block_name_.empty()) {
      return absl::InvalidArgumentError(
          "gptq: no transformer block found (optimum's block patterns match no module); set "
          "quantization_config.block_name_to_quantize");
    }
  }
  return LinearQuantizer::ProcessModelBeforeWeightLoading(root, target);
}

bool GptqQuantizer::ShouldConvert(const std::string& name,
                                  const std::vector<std::string>& skip) const {
  if (!absl::StartsWith(name, block_name_)) return false;  // optimum get_layers(prefix=...)
  if (!config_.modules_in_block_to_quantize.has_value()) return true;
  for (const auto& group : *config_.modules_in_block_to_quantize) {
    for (const std::string& keep : group) {
      if (absl::EndsWith(name, keep)) return true;
    }
  }
  return false;
}

absl::StatusOr<std::shared_ptr<QuantizedLinear>> GptqQuantizer::MakeLinear(
    const std::string& name, const models::LinearOptions& options, const LoadTarget& target) {
  GptqLinearOptions o;
  o.bits = config_.bits;
  o.group_size = config_.group_size;
  o.sym = config_.sym;
  o.desc_act = config_.desc_act;
  o.v1_zeros = config_.format != "gptq_v2";
  auto linear = GptqLinear::Create(options, o);
  if (!linear.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", linear.status().message()));
  }
  return std::shared_ptr<QuantizedLinear>(*std::move(linear));
}

double GptqQuantizer::EstimatedWeightBits(const std::string& name) const {
  // codes + fp16 scale and packed zero per group (g_idx ignored).
  const double gs = config_.group_size > 0 ? static_cast<double>(config_.group_size) : 4096.0;
  return static_cast<double>(config_.bits) + (16.0 + static_cast<double>(config_.bits)) / gs;
}

absl::StatusOr<std::unique_ptr<Quantizer>> CreateGptqQuantizer(const std::string& config_json) {
  return GptqQuantizer::Create(config_json);
}

absl::Status RegisterGptqQuantizer(QuantizerRegistry& registry) {
  return registry.Register("gptq", &CreateGptqQuantizer, {"backend", "max_input_length"});
}

}  // namespace quantserve::quant
