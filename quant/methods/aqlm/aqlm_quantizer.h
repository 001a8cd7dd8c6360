#pragma once
// The `aqlm` row of the registry, an OfflineQuantizer (transformers' AqlmHfQuantizer).
//
// AQLM is calibration-only (requires_calibration): its codebooks are learned offline on
// calibration data, so an unquantized checkpoint is FAILED_PRECONDITION with the reason.
// Loading AQLM checkpoints (codes/codebooks/scales) is not implemented yet: UNIMPLEMENTED.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

// INVALID_ARGUMENT when `config_json` is not a valid AqlmConfig.
absl::StatusOr<std::unique_ptr<Quantizer>> CreateAqlmQuantizer(const std::string& config_json);

// Registers "aqlm".
absl::Status RegisterAqlmQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
