#pragma once
// CompressedTensorsConfig: transformers 5.23's CompressedTensorsConfig, which wraps
// compressed-tensors 0.20's pydantic QuantizationConfig / QuantizationScheme /
// QuantizationArgs.
//
// Parse() accepts the flat form or the older nested one ({"quantization_config": {...}}, whose
// inner object then replaces the whole dict, as CompressedTensorsConfig.from_dict does). When
// neither config_groups nor kv_cache_scheme is truthy, transformers builds no inner config and
// validates nothing else: `quantization` stays empty and the model counts as not quantized.
// Otherwise every pydantic rule applies, each a precise INVALID_ARGUMENT naming the field by its
// path (quantization_config.config_groups.<group>.weights.strategy ...):
//   - types with pydantic's lax coercions (an int field takes 8, 8.0, "8" and true; a bool field
//     takes true, 1, "yes", ...), QuantizationArgs and QuantizationScheme forbid unknown keys,
//     QuantizationConfig ignores them (e.g. the 4.x "sparsity_config");
//   - QuantizationArgs' before- and after-validators (strategy inference from group_size,
//     group/tensor_group need group_size > 0, block <=> block_structure, token needs dynamic,
//     dynamic only with token/tensor/group/tensor_group, "local" only with tensor_group, removed
//     actorder values, float needs num_bits 4, 6 or 8 unless zp_dtype is given, ...);
//   - QuantizationScheme's (activation strategies, no actorder on activations, no
//     "mixed-precision" format) and preset groups (a list of targets under a preset's name).
// ToJson() is CompressedTensorsConfig.to_dict(): QuantizationConfig.model_dump() (with the
// QuantizationArgs serializer's omissions), or {"quant_method": "compressed-tensors"} when not
// quantized. Keys keep pydantic's field order and config_groups keep the JSON's order.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace quantserve::quant {

struct CompressedTensorsConfig {
  // compressed_tensors.QuantizationArgs after its validators.
  struct QuantizationArgs {
    int64_t num_bits = 8;
    std::string type = "int";  // "int" or "float"
    bool symmetric = true;
    std::optional<int64_t> group_size;  // -1 or > 0
    // Resolved: tensor, channel, group, block, token, tensor_group or attn_head.
    std::string strategy = "tensor";
    std::optional<std::vector<int64_t>> block_structure;  // [rows, cols] for strategy block
    nlohmann::ordered_json dynamic = false;               // false, true or "local"
    // null, "weight", "static", or a bool (only false-like or string-true inputs get here).
    nlohmann::ordered_json actorder = nullptr;
    std::optional<std::string> scale_dtype;  // canonical "torch.<dtype>"
    std::optional<std::string> zp_dtype;     // as given (canonical); serialized when asymmetric
    std::optional<std::string> observer;     // as given; null when not given
    nlohmann::ordered_json observer_kwargs = nlohmann::ordered_json::object();

    bool is_dynamic() const { return dynamic != false; }
    nlohmann::ordered_json ToJson() const;
  };

  // compressed_tensors.QuantizationScheme.
  struct QuantizationScheme {
    std::vector<std::string> targets;  // module names, class names or "re:" patterns
    std::optional<QuantizationArgs> weights;
    std::optional<QuantizationArgs> input_activations;
    std::optional<QuantizationArgs> output_activations;
    std::optional<std::string> format;  // a CompressionFormat value, not "mixed-precision"

    nlohmann::ordered_json ToJson() const;
  };

  // compressed_tensors.QuantizationConfig.
  struct Quantization {
    // Group name -> scheme, in the JSON's order (presets expanded).
    std::vector<std::pair<std::string, QuantizationScheme>> config_groups;
    std::string quant_method = "compressed-tensors";
    std::optional<QuantizationArgs> kv_cache_scheme;
    // Global compression format; any string (transformers' default "dense").
    std::string format = "dense";
    // initialized, calibration, frozen, compressed or decompressed.
    std::string quantization_status = "initialized";
    std::optional<double> global_compression_ratio;
    // Module names, class names or "re:" patterns left unquantized; transformers passes None.
    std::optional<std::vector<std::string>> ignore;
    // null or {"method": "prune"|"novice", "num_experts": [null|int, ...]}.
    nlohmann::ordered_json moe_sparsity_config = nullptr;
  };

  // Empty when neither config_groups nor kv_cache_scheme was given.
  std::optional<Quantization> quantization;
  // Loading attributes. run_compressed (deprecated) only sets dequantize = !run_compressed.
  bool dequantize = false;
  // Forced off (CompressedTensorsConfig.post_init) with dequantize or without an FP8 group.
  bool use_optimized_inference = false;

  bool is_quantized() const {
    return quantization.has_value() && !quantization->config_groups.empty();
  }
  bool is_quantization_compressed() const {
    return is_quantized() && quantization->quantization_status == "compressed";
  }
  // Some group quantizes weights to FP8 (type float, 8 bits).
  bool has_fp8_modules() const;

  static absl::StatusOr<CompressedTensorsConfig> Parse(const std::string& json);
  std::string ToJson() const;

  // compressed-tensors' PRESET_SCHEMES names (W4A16, FP8_DYNAMIC, NVFP4, ...).
  static std::vector<std::string> PresetNames();
};

}  // namespace quantserve::quant
