#include "quant/quantizer.h"

namespace quantserve::quant {

absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> Quantizer::SerializedState(
    const models::Module& root) const {
  if (!traits().is_serializable) {
    return absl::FailedPreconditionError("models quantized with '" + quant_method() +
                                         "' cannot be saved (not serializable)");
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : root.NamedParameters()) {
    if (p.slot.tied_to.empty()) out.emplace_back(p.name, *p.slot.tensor);
  }
  return out;
}

}  // namespace quantserve::quant
