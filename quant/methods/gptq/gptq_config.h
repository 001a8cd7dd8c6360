#pragma once
// GptqConfig: transformers 5.23's GPTQConfig (utils/quantization_config.py) as a C++ value.
//
// Parse() accepts what GPTQConfig(**json) accepts, fills the same defaults and applies
// post_init's rules (bits, group_size, damp_percent, dataset, desc_act/act_group_aware), each a
// precise INVALID_ARGUMENT naming the field. Field types follow the constructor's annotations:
// a JSON value of another type (a string for a bool, null for a non-Optional field, a float for
// an int) is refused even where Python's duck typing would store it (quant/methods/VALIDATION.md
// lists those cases). Unknown keys are ignored, as GPTQConfig's **kwargs does.
// ToJson() is GPTQConfig.to_dict(): every attribute in transformers' order plus the legacy
// "checkpoint_format" copy of "format".
//
// AwqConfig subclasses GPTQConfig in transformers; ParseGptqInit is the shared constructor part
// (types and defaults, no post_init) that awq_config.cc reuses.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "quant/config_reader.h"

namespace quantserve::quant {

struct GptqConfig {
  // Required; one of 2, 3, 4, 8.
  int64_t bits = 0;
  // Tokenizer id or path for calibration (any JSON value; unused at load).
  nlohmann::json tokenizer = nullptr;
  // Calibration data: null, a list of strings, or "wikitext2" / "c4" / "c4-new".
  nlohmann::json dataset = nullptr;
  // -1 (one group per output channel) or > 0.
  int64_t group_size = 128;
  // Hessian dampening, 0 < x < 1.
  double damp_percent = 0.1;
  // Act-order; forces act_group_aware off.
  bool desc_act = false;
  // GPTQModel's group-aware reordering (GAR); only without desc_act.
  bool act_group_aware = true;
  // Symmetric quantization (zero point fixed at the midpoint 2^(bits-1)).
  bool sym = true;
  // Quantize the Linears of a block one after another (calibration only).
  bool true_sequential = true;
  // Weight format, lower-cased: "gptq" (v1, zeros stored minus one) or "gptq_v2"; the legacy
  // key "checkpoint_format" overrides "format". transformers does not check the value.
  std::string format = "gptq";
  // Tooling metadata (null or an object).
  nlohmann::json meta = nullptr;
  // GPTQModel kernel choice, lower-cased; null -> "auto". A loading attribute.
  std::string backend = "auto";
  // Calibration settings (unused at load): sequence length, block path ("model.layers"),
  // modules before the first block, batch size and its padding token.
  std::optional<int64_t> model_seqlen;
  std::optional<std::string> block_name_to_quantize;
  std::optional<std::vector<std::string>> module_name_preceding_first_block;
  int64_t batch_size = 1;
  std::optional<int64_t> pad_token_id;
  // exllama buffer size. A loading attribute.
  std::optional<int64_t> max_input_length;
  // Calibration: reuse block outputs as the next block's inputs.
  bool cache_block_outputs = true;
  // Per block, the Linear names (suffixes) to quantize, in sequential groups; null: all.
  std::optional<std::vector<std::vector<std::string>>> modules_in_block_to_quantize;

  static absl::StatusOr<GptqConfig> Parse(const std::string& json);
  // The attributes in transformers' order (quant_method first), without checkpoint_format.
  nlohmann::ordered_json ToOrderedJson(const std::string& quant_method) const;
  std::string ToJson() const;
};

// The arguments AwqConfig.__init__ hands to GPTQConfig.__init__ explicitly (JSON values, before
// GPTQConfig lower-cases them); a plain GPTQConfig passes the JSON's own keys.
struct GptqInitArgs {
  std::optional<nlohmann::json> bits;  // nullopt: required (GPTQConfig has no default)
  nlohmann::json format = "gptq";
  nlohmann::json backend = nullptr;
};

// GPTQConfig.__init__ without post_init: reads every GPTQConfig field from `reader` (except
// bits/format/backend, which come from `args` and the "checkpoint_format" override) into `out`.
absl::Status ParseGptqInit(const ConfigReader& reader, const GptqInitArgs& args, GptqConfig* out);

}  // namespace quantserve::quant
