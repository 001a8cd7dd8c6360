#pragma once
// The `awq` row of the registry, an OfflineQuantizer (transformers' AwqQuantizer).
//
// AWQ is calibration-only (requires_calibration): its per-channel scales are searched on
// calibration activations offline, so an unquantized checkpoint is FAILED_PRECONDITION with the
// reason. Loading AWQ checkpoints (qweight/qzeros/scales) is not implemented yet:
// UNIMPLEMENTED. is_serializable is false for the exllama backends, as in transformers.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

// INVALID_ARGUMENT when `config_json` is not a valid AwqConfig.
absl::StatusOr<std::unique_ptr<Quantizer>> CreateAwqQuantizer(const std::string& config_json);

// Registers "awq".
absl::Status RegisterAwqQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
