#pragma once
// The `compressed-tensors` row of the registry: transformers' CompressedTensorsHfQuantizer on
// CPU, a LinearQuantizer whose modules are CompressedTensorsLinear.
//
// compressed-tensors checkpoints are written offline by llm-compressor (requires_calibration),
// so an unquantized checkpoint is FAILED_PRECONDITION with the reason. A pre-quantized
// checkpoint (quantization_status "compressed") is loaded as compressed-tensors'
// apply_quantization_config matches it (utils/match.py):
//   - a Linear is quantized when some target matches it (a "re:" pattern by Python re.match
//     from the start of the dotted name, any other string by exact name or by class name,
//     "Linear"/"Module") and no `ignore` entry matches it the same way;
//   - its scheme is the one of the first matching target in match_targets' order: exact
//     names, then "re:" patterns, then class names, each sorted by string; a target listed
//     in two groups belongs to the later one;
//   - its format is the scheme's `format`, or the one compressed-tensors infers (int weights
//     with input activations -> int-quantized, int1..8 weights -> pack-quantized, float
//     weights with input activations -> float-quantized, else naive-quantized).
// Tied weights are never converted. Loading attributes (transformers' get_loading_attributes):
// `dequantize` (no activation quantization, the dense model transformers then builds) and
// `use_optimized_inference` (no FP8 kernels on CPU: the same route). Traits are transformers':
// serializable, trainable unless the FP8 kernel path (use_optimized_inference) is taken.
// SaveModel writes the loaded tensors as they came and the quantization_config as
// compressed-tensors' ModelCompressor.update_config writes it.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "quant/quantizer.h"
#include "quant/quantizer_registry.h"

namespace quantserve::quant {

// INVALID_ARGUMENT when `config_json` is not a valid CompressedTensorsConfig (or a "re:"
// target / ignore pattern is not a valid regex).
absl::StatusOr<std::unique_ptr<Quantizer>> CreateCompressedTensorsQuantizer(const std::string& config_json);

// Registers "compressed-tensors" with its loading attributes.
absl::Status RegisterCompressedTensorsQuantizer(QuantizerRegistry& registry);

}  // namespace quantserve::quant
