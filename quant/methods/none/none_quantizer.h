#pragma once
// The `none` method: an unquantized load. Every hook keeps transformers' no-op behaviour, so
// the load pipeline runs the same lifecycle for every model.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/quantizer.h"

namespace quantserve::quant {

class NoneQuantizer final : public Quantizer {
 public:
  static absl::StatusOr<std::unique_ptr<Quantizer>> Create(const std::string& config_json);

  const std::string& quant_method() const override;
  const QuantizerTraits& traits() const override;
  std::string NormalizedConfigJson() const override { return ""; }

 private:
  NoneQuantizer() = default;
};

}  // namespace quantserve::quant
