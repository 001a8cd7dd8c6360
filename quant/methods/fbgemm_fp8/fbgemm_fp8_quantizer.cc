#include "quant/methods/fbgemm_fp8/fbgemm_fp8_quantizer.h"

#include "common/status_macros.h"
#include "quant/methods/fbgemm_fp8/fbgemm_fp8_linear.h"

namespace quantserve::quant {
namespace {

QuantizerTraits FbgemmFp8Traits() {
  QuantizerTraits t;
  t.requires_calibration = false;
  t.is_serializable = true;
  t.is_trainable = false;
  t.requires_parameters_quantization = true;
  return t;
}

}  // namespace

FbgemmFp8Quantizer::FbgemmFp8Quantizer(FbgemmFp8Config config)
    : LinearQuantizer("fbgemm_fp8", FbgemmFp8Traits(), config.ToJson(),
                      config.modules_to_not_convert),
      config_(std::move(config)) {}

absl::StatusOr<std::unique_ptr<Quantizer>> FbgemmFp8Quantizer::Create(
    const std::string& config_json) {
  QS_ASSIGN_OR_RETURN(FbgemmFp8Config config, FbgemmFp8Config::Parse(config_json));
  return std::unique_ptr<Quantizer>(new FbgemmFp8Quantizer(std::move(config)));
}

c10::ScalarType FbgemmFp8Quantizer::UpdateTorchDtype(c10::ScalarType requested) {
  return c10::ScalarType::BFloat16;
}

absl::StatusOr<std::shared_ptr<QuantizedLinear>> FbgemmFp8Quantizer::MakeLinear(
    const std::string& name, const models::LinearOptions& options, const LoadTarget& target) {
  return std::make_shared<FbgemmFp8Linear>(FbgemmFp8LinearOptions{
      .linear = options,
      .activation_scale_ub = config_.activation_scale_ub,
      .prequantized = target.checkpoint_is_prequantized});
}

absl::Status RegisterFbgemmFp8Quantizer(QuantizerRegistry& registry) {
  return registry.Register("fbgemm_fp8", &FbgemmFp8Quantizer::Create, {"activation_scale_ub"});
}

}  // namespace quantserve::quant
