#include "quant/methods/bitsandbytes/bitsandbytes_quantizer.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "quant/methods/bitsandbytes/bitsandbytes_linear.h"
#include "quant/module_match.h"

namespace quantserve::quant {
namespace {

const QuantizerTraits kTraits{.requires_calibration = false,
                              .is_serializable = true,
                              .is_trainable = true,
                              .requires_parameters_quantization = true};

bool IsOffloadDevice(const std::string& device) { return device == "cpu" || device == "disk"; }

}  // namespace

BitsAndBytesQuantizer::BitsAndBytesQuantizer(BitsAndBytesConfig config)
    : LinearQuantizer("bitsandbytes", kTraits, config.ToJson(), std::nullopt),
      config_(std::move(config)) {}

absl::StatusOr<std::unique_ptr<Quantizer>> BitsAndBytesQuantizer::Create(
    const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(BitsAndBytesConfig config, BitsAndBytesConfig::Parse(config_json));
  return std::unique_ptr<Quantizer>(new BitsAndBytesQuantizer(std::move(config)));
}

absl::Status BitsAndBytesQuantizer::ValidateEnvironment(const LoadTarget& target) {
  if (!config_.llm_int8_enable_fp32_cpu_offload && !target.device_map.empty()) {
    std::set<std::string> values;
    std::vector<std::string> offloaded;
    for (const auto& [module, device] : target.device_map) {
      values.insert(device);
      if (IsOffloadDevice(device)) offloaded.push_back(absl::StrCat("'", module, "': ", device));
    }
    if (values != std::set<std::string>{"cpu"} && !offloaded.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device_map dispatches some modules to the CPU or the disk (",
          absl::StrJoin(offloaded, ", "),
          ") and the rest to an accelerator; bitsandbytes can only keep such modules "
          "unquantized in 32-bit with quantization_config.llm_int8_enable_fp32_cpu_offload = "
          "true (otherwise make sure the quantized model fits in GPU memory)"));
    }
  }
  return LinearQuantizer::ValidateEnvironment(target);
}

std::vector<std::string> BitsAndBytesQuantizer::ModulesToNotConvert(
    const models::Module& root) const {
  // get_modules_to_not_convert(add_default_skips=False): a given list replaces the defaults.
  std::vector<std::string> skip = config_.llm_int8_skip_modules.has_value()
                                      ? *config_.llm_int8_skip_modules
                                      : DefaultModulesToNotConvert(root);
  skip.insert(skip.end(), offloaded_.begin(), offloaded_.end());
  return skip;
}

bool BitsAndBytesQuantizer::ShouldConvert(const std::string& name,
                                          const std::vector<std::string>& skip) const {
  // should_convert_module tests name.endswith(pattern), true for "" (a device_map key for
  // the whole model): everything is skipped.
  for (const auto& p : skip) {
    if (p.empty()) return false;
  }
  return LinearQuantizer::ShouldConvert(name, skip);
}

absl::Status BitsAndBytesQuantizer::ProcessModelBeforeWeightLoading(models::Module& root,
                                                                    const LoadTarget& target) {
  offloaded_.clear();
  if (config_.llm_int8_enable_fp32_cpu_offload) {
    for (const auto& [module, device] : target.device_map) {
      if (IsOffloadDevice(device)) offloaded_.push_back(module);
    }
  }
  const std::vector<std::string> skip = ModulesToNotConvert(root);
  for (const auto& m : root.NamedModules()) {
    if (dynamic_cast<models::DenseLinear*>(m.module) == nullptr || !ShouldConvert(m.name, skip)) {
      continue;
    }
    for (const auto& p : m.module->NamedParameters(m.name)) {
      if (p.slot.tied_to.empty()) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          "quantization_config.llm_int8_skip_modules replaces the default skip list, so '", m.name,
          "' would be quantized, but its parameter '", p.name, "' is tied to '", p.slot.tied_to,
          "' (transformers converts it and fails at the first forward); add \"", m.name,
          "\" to llm_int8_skip_modules"));
    }
  }
  return LinearQuantizer::ProcessModelBeforeWeightLoading(root, target);
}

double BitsAndBytesQuantizer::EstimatedWeightBits(const std::string& name) const {
  if (config_.load_in_8bit) {
    const QuantizedLinear* m = converted_module(name);
    if (config_.llm_int8_has_fp16_weight || m == nullptr) {
      return m == nullptr ? 8.0 : 8.0 * static_cast<double>(c10::elementSize(m->options().dtype));
    }
    return 8.0 + 32.0 / static_cast<double>(m->options().in_features);
  }
  return config_.bnb_4bit_use_double_quant ? 4.0 + 8.0 / 64 + 32.0 / (64 * 256) : 4.0 + 32.0 / 64;
}

absl::StatusOr<std::shared_ptr<QuantizedLinear>> BitsAndBytesQuantizer::MakeLinear(
    const std::string& name, const models::LinearOptions& options, const LoadTarget& target) {
  if (config_.load_in_8bit) {
    return std::make_shared<BnbLinear8bitLt>(options, config_.llm_int8_threshold,
                                             config_.llm_int8_has_fp16_weight,
                                             target.checkpoint_is_prequantized);
  }
  BnbLinear4bitOptions o;
  o.quant_type =
      config_.bnb_4bit_quant_type == "nf4" ? bnb::FourBitType::kNf4 : bnb::FourBitType::kFp4;
  o.compute_dtype = config_.bnb_4bit_compute_dtype;
  o.double_quant = config_.bnb_4bit_use_double_quant;
  o.quant_storage = config_.bnb_4bit_quant_storage;
  o.prequantized = target.checkpoint_is_prequantized;
  return std::make_shared<BnbLinear4bit>(options, o);
}

absl::Status BitsAndBytesQuantizer::PrequantizedSupport() const { return absl::OkStatus(); }

absl::Status RegisterBitsAndBytesQuantizer(QuantizerRegistry& registry) {
  return registry.Register("bitsandbytes", &BitsAndBytesQuantizer::Create);
}

}  // namespace quantserve::quant
