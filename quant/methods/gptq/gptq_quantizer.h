#pragma once
// The `gptq` row of the registry, an OfflineQuantizer (transformers' GptqHfQuantizer).
//
// transformers can quantize an unquantized checkpoint with GPTQ only by running optimum's GPTQ
// over a calibration `dataset` at load; quantserve does not, so an unquantized checkpoint is
// FAILED_PRECONDITION with the reason. Loading GPTQ checkpoints (qweight/qzeros/scales/g_idx)
// is not implemented yet: UNIMPLEMENTED. Traits are GptqHfQuantizer's: requires_calibration
// false, serializable, trainable.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

// INVALID_ARGUMENT when `config_json` is not a valid GptqConfig.
absl::StatusOr<std::unique_ptr<Quantizer>> CreateGptqQuantizer(const std::string& config_json);

// Registers "gptq".
absl::Status RegisterGptqQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
