#pragma once
// HqqConfig: transformers 5.23's HqqConfig (a wrapper around hqq 0.2.8's BaseQuantizeConfig),
// parsed from either JSON form transformers knows:
//
//   constructor form (what HqqConfig(**kwargs) takes):
//     {"quant_method": "hqq", "nbits": 4, "group_size": 64, "view_as_float": false,
//      "axis": 1, "dynamic_config": {"<linear tag>": {BaseQuantizeConfig kwargs}, ...},
//      "skip_modules": ["lm_head"]}
//   to_dict form (config.json of a saved model; HqqConfig.from_dict reads only these keys):
//     {"quant_method": "hqq", "quant_config": <layer config> | {"<tag>": <layer config>|null},
//      "skip_modules": [...]}
//   where <layer config> = {"weight_quant_params": {...}, "scale_quant_params": ...,
//                           "zero_quant_params": ..., "offload_meta": false}.
//
// Validation is hqq's (its asserts and the TypeErrors its kwargs raise) plus HqqConfig's axis
// check, done here at parse time instead of at load: INVALID_ARGUMENT naming the field for
// what hqq/transformers reject, UNIMPLEMENTED for what they accept but this server does not
// (channel_wise=false, bitpack=false, offload_meta=true). ToJson() is HqqConfig.to_dict().

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quantserve::quant {

// hqq's weight_quant_params: the arguments of Quantizer.quantize for one Linear.
struct HqqWeightQuantParams {
  // One of hqq's Quantizer.SUPPORTED_BITS: 8, 6, 5, 4, 3, 2, 1.58, 1.
  double nbits = 4;
  // The JSON spelled nbits as a float (4.0, 1.58): hqq then keeps a Python float, which its
  // state dict encodes as a float32 scalar instead of int32.
  bool nbits_is_float = false;
  // Elements per group along `axis`; nullopt (JSON null) is one group per output row (axis 1)
  // or per input column (axis 0), as HQQLinear.initialize substitutes.
  std::optional<int64_t> group_size = 64;
  // 1: groups are runs of the flattened row-major weight ([N*K/G, G]); 0: groups are columns
  // of weight.reshape(G, -1).
  int64_t axis = 1;
  bool optimize = true;        // run the proximal zero-point solver
  bool round_zero = true;      // round the initial zero point (BaseQuantizeConfig: nbits == 4)
  bool view_as_float = false;  // store W_q reinterpreted as the compute dtype

  // Which optional keys weight_quant_params spelled out: hqq writes each of them into the
  // layer's state dict (the to_dict form may omit them; the constructor form has them all).
  bool has_channel_wise = true;
  bool has_optimize = true;
  bool has_round_zero = true;
  bool has_bitpack = false;

  // Largest code, round(2^nbits - 1).
  int64_t max_code() const;
};

struct HqqConfig {
  // One config for every Linear whose tag is not in skip_modules; unset in per-tag mode.
  std::optional<HqqWeightQuantParams> quant_config;
  // Per-tag mode (dynamic_config, or a to_dict quant_config keyed by tag): linear tag ->
  // params, nullopt when the tag is listed with null (not quantized).
  std::map<std::string, std::optional<HqqWeightQuantParams>> tag_configs;
  // Linear tags ("self_attn.q_proj", "lm_head") never quantized in the one-config mode.
  std::vector<std::string> skip_modules = {"lm_head"};
  // to_dict()["quant_config"]: BaseQuantizeConfig's dict(s), or the to_dict input verbatim.
  nlohmann::json quant_config_json;

  static absl::StatusOr<HqqConfig> Parse(const std::string& json);
  // {"quant_config": ..., "quant_method": "hqq", "skip_modules": [...]}, like to_dict().
  std::string ToJson() const;
};

}  // namespace quantserve::quant
