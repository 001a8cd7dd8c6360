#pragma once
// The `compressed-tensors` row of the registry, an OfflineQuantizer (transformers'
// CompressedTensorsHfQuantizer).
//
// compressed-tensors checkpoints are written offline by llm-compressor (requires_calibration),
// so an unquantized checkpoint is FAILED_PRECONDITION with the reason. Loading them
// (weight_packed / weight_scale / weight_zero_point ...) is not implemented yet: UNIMPLEMENTED.
// Traits are transformers': serializable, trainable unless the FP8 kernel path
// (use_optimized_inference) is taken.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

// INVALID_ARGUMENT when `config_json` is not a valid CompressedTensorsConfig.
absl::StatusOr<std::unique_ptr<Quantizer>> CreateCompressedTensorsQuantizer(const std::string& config_json);

// Registers "compressed-tensors".
absl::Status RegisterCompressedTensorsQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
