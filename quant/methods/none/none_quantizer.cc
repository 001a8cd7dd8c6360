#include "quant/methods/none/none_quantizer.h"

namespace quantserve::quant {

absl::StatusOr<std::unique_ptr<Quantizer>> NoneQuantizer::Create(const std::string& config_json) {
  return std::unique_ptr<Quantizer>(new NoneQuantizer());
}

const std::string& NoneQuantizer::quant_method() const {
  static const std::string kName = "none";
  return kName;
}

const QuantizerTraits& NoneQuantizer::traits() const {
  static const QuantizerTraits kTraits{};
  return kTraits;
}

}  // namespace quantserve::quant
