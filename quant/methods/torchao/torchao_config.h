#pragma once
// TorchAoConfig: transformers 5.23's `quant_method: "torchao"` config, i.e. the torchao 0.18
// AOBaseConfig that `quantize_` applies to every converted Linear weight.
//
// `quant_type` arrives as torchao's config_to_dict JSON under the single key "default":
//
//   "quant_type": {"default": {"_type": "Int4WeightOnlyConfig", "_version": 2,
//                              "_data": {"group_size": 128, ...}}}
//
// Nested objects use the same encoding: granularities {"_type": "PerRow", "_version": 1,
// "_data": {"dim": -1}}, enums {"_type": "MappingType", "_data": "SYMMETRIC"} (the member
// name), torch dtypes {"_type": "torch.dtype", "_data": "bfloat16"}. Supported types:
//   Int4WeightOnlyConfig                     int4_packing_format "plain" (Int4Tensor) only
//   Int8WeightOnlyConfig                     granularity PerRow / PerTensor / PerGroup
//   Int8DynamicActivationInt8WeightConfig    PerRow / PerTensor, SYMMETRIC / ASYMMETRIC acts
//   FqnToConfig (alias ModuleFqnToConfig)    per-module choice of the three above, or null
//
// Legacy string form (transformers 4.x): `"quant_type": "int4_weight_only" |
// "int8_weight_only" | "int8_dynamic_activation_int8_weight"` with `quant_type_kwargs`.
// transformers 5.23 refuses strings; quantserve accepts them as an alias for the equivalent
// AOBaseConfig (kwargs are that config's fields, except that int8_weight_only's legacy
// `group_size` means granularity PerGroup(group_size)) and reports that AOBaseConfig as the
// normalized config. Unknown kwargs are INVALID_ARGUMENT like 4.x's signature check.
//
// `include_input_output_embeddings: true` (quantizing nn.Embedding) is UNIMPLEMENTED here.

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace quantserve::quant {

// torchao.quantization.granularity, as far as the int8 workflows take it.
struct TorchAoGranularity {
  enum class Kind { kPerTensor, kPerRow, kPerGroup };
  Kind kind = Kind::kPerRow;
  int64_t dim = -1;        // PerRow: the dim that keeps its size (-1 = one scale per row)
  int64_t group_size = 0;  // PerGroup: elements per scale along the last dim

  // torchao's get_block_size for a [rows, cols] tensor: {block_rows, block_cols}.
  std::pair<int64_t, int64_t> BlockSize(int64_t rows, int64_t cols) const;
};

enum class TorchAoScheme { kInt4WeightOnly, kInt8WeightOnly, kInt8DynamicActivationInt8Weight };

// One leaf AOBaseConfig (what quantize_ applies to a Linear).
struct TorchAoSchemeConfig {
  TorchAoScheme scheme = TorchAoScheme::kInt8WeightOnly;
  int64_t group_size = 128;               // Int4WeightOnlyConfig.group_size
  TorchAoGranularity weight_granularity;  // Int8*: the weight's granularity
  TorchAoGranularity act_granularity;     // Int8DynamicActivationInt8Weight: activations
  bool act_symmetric = true;              // act_mapping_type SYMMETRIC (else ASYMMETRIC)
  bool reduce_range = false;              // int8 range [-64, 63] instead of [-128, 127]
  nlohmann::ordered_json json;            // torchao's config_to_dict of this config

  // "Int4WeightOnlyConfig", ...
  const char* type_name() const;
};

struct TorchAoConfig {
  // One entry of FqnToConfig: a module/parameter FQN, "re:<regex>" (re.fullmatch), or
  // "_default"; `config` null = leave it in floating point.
  struct FqnEntry {
    std::string key;
    std::shared_ptr<const std::regex> regex;  // set for "re:" keys
    std::optional<TorchAoSchemeConfig> config;
  };

  bool is_fqn_to_config = false;      // quant_type is FqnToConfig
  TorchAoSchemeConfig single;         // the config when !is_fqn_to_config
  std::vector<FqnEntry> fqn_entries;  // in JSON order (first matching regex wins)
  int64_t fqn_version = 1;            // FqnToConfig's _version, echoed
  std::string legacy_quant_type;      // set when quant_type was a 4.x string
  std::optional<std::vector<std::string>> modules_to_not_convert;
  bool include_input_output_embeddings = false;
  bool untie_embedding_weights = false;

  // INVALID_ARGUMENT naming the field for anything transformers 5.23 + torchao 0.18 refuse
  // (or that quantserve does not implement, saying so).
  static absl::StatusOr<TorchAoConfig> Parse(const std::string& json);

  // transformers' TorchAoConfig.to_dict(): quant_method, quant_type {"default": ...},
  // modules_to_not_convert, include_input_output_embeddings, untie_embedding_weights.
  std::string ToJson() const;

  // The config transformers' TorchAoQuantize applies to the Linear `module_name`, or null when
  // FqnToConfig leaves it in floating point. Precedence as in transformers 5.23: exact
  // "<module>.weight", exact "<module>", then the first "re:" key fully matching the parameter
  // or the module name, then "_default".
  const TorchAoSchemeConfig* ConfigFor(const std::string& module_name) const;

  // fqn_matches_fqn_config: `fqn` is a key of FqnToConfig or fully matches one of its "re:"
  // keys ("_default" does not count). False when quant_type is not FqnToConfig.
  bool MatchesFqn(const std::string& fqn) const;

  // transformers' is_trainable: the quant_type class name has "8weight" in it.
  bool is_int8_class() const;
};

}  // namespace quantserve::quant
