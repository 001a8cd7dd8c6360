#pragma once
// OfflineQuantizer: the registry row of a method whose checkpoints can only be made offline
// with calibration data (GPTQ, AWQ, AQLM, compressed-tensors). It carries the method's
// validated config (its normalized JSON for ModelInfo) and transformers' traits.
// ValidateEnvironment refuses an unquantized checkpoint with FAILED_PRECONDITION and the
// method's reason; loading its pre-quantized checkpoints is not implemented yet
// (UNIMPLEMENTED). Every other hook keeps the Quantizer defaults.

#include <memory>
#include <string>

#include "quant/quantizer.h"

namespace quantserve::quant {

class OfflineQuantizer final : public Quantizer {
 public:
  struct Options {
    std::string quant_method;            // the registry key ("gptq", "compressed-tensors", ...)
    QuantizerTraits traits;              // transformers' class attributes for this config
    std::string normalized_config_json;  // the config's to_dict() JSON
    // Why an unquantized checkpoint cannot be quantized here, and what to do instead; the
    // list of methods that quantize at load is appended.
    std::string why_offline;
  };

  static std::unique_ptr<Quantizer> Create(Options options) {
    return std::unique_ptr<Quantizer>(new OfflineQuantizer(std::move(options)));
  }

  const std::string& quant_method() const override { return options_.quant_method; }
  const QuantizerTraits& traits() const override { return options_.traits; }
  std::string NormalizedConfigJson() const override { return options_.normalized_config_json; }
  absl::Status ValidateEnvironment(const LoadTarget& target) override {
    if (!target.checkpoint_is_prequantized) {
      return absl::FailedPreconditionError(
          options_.why_offline +
          ", or use a method that quantizes at load: bitsandbytes, hqq, quanto, eetq, "
          "fbgemm_fp8, torchao");
    }
    return absl::UnimplementedError("loading pre-quantized " + options_.quant_method +
                                    " checkpoints is not supported yet");
  }

 private:
  explicit OfflineQuantizer(Options options) : options_(std::move(options)) {}
  Options options_;
};

}  // namespace quantserve::quant
