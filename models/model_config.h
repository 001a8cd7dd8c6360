#pragma once
// ModelConfig: the architecture hyperparameters read from an HF `config.json`.
//
// Parsing is strict about what changes the math (unknown rope scaling types, inconsistent head
// counts are INVALID_ARGUMENT naming the field) and lenient about everything else, like
// transformers' PretrainedConfig. No LibTorch here.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quantserve::models {

enum class Architecture { kLlamaForCausalLM, kBertModel };

struct RopeScaling {
  std::string type = "default";  // default|linear|llama3
  double factor = 1.0;
  double low_freq_factor = 1.0;                 // llama3
  double high_freq_factor = 4.0;                // llama3
  int64_t original_max_position_embeddings = 0;  // llama3
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlamaForCausalLM;
  std::string architecture_name;  // as in config.json, e.g. "Qwen2ForCausalLM"
  std::string model_type;         // llama|mistral|qwen2|bert
  std::string torch_dtype;        // checkpoint dtype from config.json ("" if absent)

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  std::string hidden_act = "silu";

  // Decoder (Llama family).
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool attention_bias = false;   // q/k/v (and o for Llama) projections carry a bias
  bool o_proj_bias = false;      // Llama: same as attention_bias; Qwen2: never
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  std::optional<int64_t> sliding_window;  // Mistral/Qwen2; only honoured below its length

  // Encoder (BERT).
  double layer_norm_eps = 1e-12;
  int64_t type_vocab_size = 2;

  // Special tokens (generation_config.json overrides config.json).
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;
  std::optional<int32_t> pad_token_id;

  // The raw quantization_config object text ("" when absent).
  std::string quantization_config_json;
};

// Parses config.json text (and optional generation_config.json text, "" when absent).
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& config_json,
                                             const std::string& generation_config_json = "");

}  // namespace quantserve::models
