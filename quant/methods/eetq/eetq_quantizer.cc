#include "quant/methods/eetq/eetq_quantizer.h"

#include "common/status_macros.h"
#include "quant/methods/eetq/eetq_linear.h"

namespace quantserve::quant {
namespace {

QuantizerTraits EetqTraits() {
  QuantizerTraits t;
  t.requires_calibration = false;
  t.is_serializable = true;
  t.is_trainable = true;
  t.requires_parameters_quantization = true;
  return t;
}

}  // namespace

EetqQuantizer::EetqQuantizer(EetqConfig config)
    : LinearQuantizer("eetq", EetqTraits(), config.ToJson(), config.modules_to_not_convert),
      config_(std::move(config)) {}

absl::StatusOr<std::unique_ptr<Quantizer>> EetqQuantizer::Create(const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(EetqConfig config, EetqConfig::Parse(config_json));
  return std::unique_ptr<Quantizer>(new EetqQuantizer(std::move(config)));
}

absl::StatusOr<std::shared_ptr<QuantizedLinear>> EetqQuantizer::MakeLinear(
    const std::string& name, const models::LinearOptions& options, const LoadTarget& target) {
  return std::make_shared<EetqLinear>(options, target.checkpoint_is_prequantized);
}

absl::Status RegisterEetqQuantizer(QuantizerRegistry& registry) {
  return registry.Register("eetq", &EetqQuantizer::Create);
}

}  // namespace quantserve::quant
