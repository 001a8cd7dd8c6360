#pragma once
// EetqQuantizer: transformers' EetqHfQuantizer for an unquantized checkpoint quantized at load.
//
//   traits                 requires_calibration false, serializable, trainable (as transformers)
//   ValidateEnvironment    no device check: transformers needs CUDA (EETQ has no CPU kernel);
//                          we quantize on the CPU like EETQ and compute by dequantize + linear
//   UpdateTorchDtype       the requested dtype (transformers 5.23 only suggests float16)
//   skip rule              transformers' default (lm_head, tied weights) + modules_to_not_convert
//   modules                EetqLinear (see eetq_linear.h)
//   pre-quantized / save   EETQ's serialized layout: weight int8 [in, out] in the CUTLASS SM80
//                          byte order, weight_scales f16 [out]; EetqConfig has no loading
//                          attributes; the saved config is to_dict()

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/linear_quantizer.h"
#include "quant/methods/eetq/eetq_config.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

class EetqQuantizer final : public LinearQuantizer {
 public:
  // INVALID_ARGUMENT for a config transformers rejects (see EetqConfig::Parse).
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  const EetqConfig& config() const { return config_; }
  absl::Status PrequantizedSupport() const override { return absl::OkStatus(); }

 protected:
  absl::StatusOr<std::shared_ptr<QuantizedLinear>> MakeLinear(const std::string& name,
                                                              const models::LinearOptions& options,
                                                              const LoadTarget& target) override;

 private:
  explicit EetqQuantizer(EetqConfig config);

  EetqConfig config_;
};

// Registers "eetq".
absl::Status RegisterEetqQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
